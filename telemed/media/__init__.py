"""The video room: the aiortc relay, media checks and recording."""
