# `make demo`: placeholder until the platform, firmware and virtual-board issues land.
import sys

print("zeroburn demo: not yet implemented (needs the platform, firmware and virtual-board work)")
sys.exit(1)
