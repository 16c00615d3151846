"""The one error type of the configuration: a ValueError that names the offending key."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid configuration value.

    `key` is the dotted name of the value (``model.layers``); checks inside a dataclass give
    the key relative to that dataclass, and the loader prefixes the section it was building,
    so a message read by a user always starts with the full dotted key.
    """

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)

    def under(self, section: str) -> ConfigError:
        """The same error with `section` prepended to its key."""
        if not section:
            return self
        return ConfigError(f"{section}.{self.key}" if self.key else section, self.reason)


def require(condition: bool, key: str, reason: str) -> None:
    if not condition:
        raise ConfigError(key, reason)
