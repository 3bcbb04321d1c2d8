"""One exception family for livegen; each also inherits the builtin that fits it."""


class LivegenError(Exception):
    """Base of every error livegen raises on purpose."""


class ModelError(LivegenError, ValueError):
    """A model file that is missing, unreadable, not ONNX, or breaks the contract."""


class PortError(LivegenError, OSError):
    """A MIDI port that cannot be found or opened."""


class ConfigError(LivegenError, ValueError):
    """A bad flag or config file value."""


class MidiFileError(LivegenError, ValueError):
    """A MIDI file that cannot be read."""
