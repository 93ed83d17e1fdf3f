"""Load and measurement: the load client (loadgen), many virtual boards at once (fleet), and
`zeroburn bench` (device figures, reference peers, the report).

May import: the base (host_tools.errors, paths, runtime, sysdeps), host_tools.build,
host_tools.platform and host_tools.emulator. Nothing imports from load (only host_tools.cli,
by module name).
"""
