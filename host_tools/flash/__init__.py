"""Putting the build onto a real board: `zeroburn flash|info|install-micropython|repl`, over
one board link (mpremote's SerialTransport), with the console and the progress display.

May import: the base (host_tools.errors, paths, runtime, sysdeps) and host_tools.build.
Never platform, emulator or load.
"""
