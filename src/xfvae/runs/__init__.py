"""Run bookkeeping: run directories and their ownership, provenance and identity, atomic files,
checkpoint I/O, stop signals and sweep outcomes. Knows nothing about models or metrics."""
