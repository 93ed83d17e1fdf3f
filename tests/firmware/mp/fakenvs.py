# A fake esp32.NVS with ESP-IDF commit semantics, for firmware tests on both runtimes.


class FakeNvs:
    """Uncommitted changes are visible but lost at a power cut, as on ESP-IDF."""

    def __init__(self):
        self.committed = {}
        self.pending = {}
        self.writes = 0

    def set_blob(self, key, value):
        self.pending[key] = bytes(value)
        self.writes += 1

    def get_blob(self, key, buf):
        v = self.pending.get(key, self.committed.get(key))
        if v is None:
            raise OSError(-4354)  # ESP_ERR_NVS_NOT_FOUND
        if len(buf) < len(v):
            raise OSError(-4364)  # ESP_ERR_NVS_INVALID_LENGTH
        buf[: len(v)] = v
        return len(v)

    def commit(self):
        self.committed.update(self.pending)
        self.pending = {}

    def power_cut(self):
        self.pending = {}
