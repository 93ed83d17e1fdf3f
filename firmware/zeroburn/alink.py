# Alink thing-model property posts, loaded only when config sets "alink": true.
import json


def post(sample):
    """Alink property post (JSON bytes) carrying a telemetry sample's numeric fields."""
    d = json.loads(sample)
    params = {}
    for k in ("uptime_s", "heap_free", "rssi", "temp_c"):
        if k in d:
            params[k] = {"value": d[k], "time": d["ts"]}
    return json.dumps(
        {
            "id": str(d["id"]),
            "version": "1.0",
            "sys": {"ack": 0},
            "params": params,
            "method": "thing.event.property.post",
        }
    ).encode()
