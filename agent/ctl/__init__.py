"""`camera-ctl`: one command that sends a camera command, waits for its answer (and, asked to,
for its job's end) and prints it; for people and scripts that would otherwise write
mosquitto_pub and mosquitto_sub lines by hand."""
