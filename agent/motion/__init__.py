"""Motion detection: the detector, its events, and the clips and snapshots they make."""
