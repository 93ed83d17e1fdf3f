# Placeholder until its issue lands: the subcommand says it is not implemented and exits 1.
from host_tools.stub import configure_stub as configure  # noqa: F401
