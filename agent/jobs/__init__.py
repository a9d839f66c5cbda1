"""Jobs: picture, record and trim, run by the JobManager and reported on `BASE/status`."""
