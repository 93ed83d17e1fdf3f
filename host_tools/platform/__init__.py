"""The local emulator of Alibaba Cloud IoT: MQTT broker with regnwl/connwl auth, TLS, SQLite
state, the operator CLI (`zeroburn platform`), and readers of a local platform's state for
the tools that point boards at it (local).

May import: the base (host_tools.errors, paths, runtime, sysdeps) only. Never build, flash,
emulator or load.
"""
