"""The live H.264 stream: ffmpeg argument builders, the MediaMTX API, the supervisor."""
