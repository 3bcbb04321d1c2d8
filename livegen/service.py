"""livegen under systemd: the unit (`livegen service print | install`), where the config is
found without --config, and sd_notify over $NOTIFY_SOCKET with the standard library."""
from __future__ import annotations

import getpass
import logging
import os
import socket
import sys
from pathlib import Path

from livegen.errors import ConfigError

log = logging.getLogger("livegen")

SYSTEM_CONFIG = Path("/etc/livegen/livegen.toml")
SYSTEM_UNIT = Path("/etc/systemd/system/livegen.service")
WATCHDOG_S = 10          # WatchdogSec: the daemon says it is alive every 5 s at most

CONFIG_TEMPLATE = """\
# livegen settings: any flag of `livegen run` (without its dashes), e.g.
# input = "all"          # every keyboard, plugged in now or later
# output = "virtual"
# mode = "loop"
# bpm = 120
"""


def user_config() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "livegen" / "livegen.toml"


def user_unit() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / "livegen.service"


def default_config() -> Path | None:
    """The config `livegen run` reads when no --config is given: the user's, else the system's."""
    for path in (user_config(), SYSTEM_CONFIG):
        if path.is_file():
            return path
    return None


def unit_text(user: bool, run_as: str | None = None) -> str:
    """A unit that starts `livegen run` at boot (system) or login (user), restarts it whatever
    ends it, and has systemd restart it when it stops saying it is alive."""
    config = user_config() if user else SYSTEM_CONFIG
    lines = ["[Unit]",
             "Description=livegen: real-time MIDI accompaniment",
             "After=sound.target",
             "",
             "[Service]",
             "Type=notify",
             "NotifyAccess=main",
             f"ExecStart={sys.executable} -m livegen run --config {config}",
             "Restart=always",
             "RestartSec=2",
             f"WatchdogSec={WATCHDOG_S}",
             "TimeoutStopSec=10",
             "Environment=PYTHONUNBUFFERED=1"]
    if not user:
        lines += [f"User={run_as or _login_name()}", "SupplementaryGroups=audio"]
    lines += ["", "[Install]", f"WantedBy={'default.target' if user else 'multi-user.target'}", ""]
    return "\n".join(lines)


def _login_name() -> str:
    return os.environ.get("SUDO_USER") or getpass.getuser()


def install(user: bool, run_as: str | None = None) -> tuple[Path, Path, bool]:
    """Writes the unit, and a config with its settings commented out when there is none;
    returns (unit, config, whether the config was made)."""
    unit, config = (user_unit(), user_config()) if user else (SYSTEM_UNIT, SYSTEM_CONFIG)
    try:
        unit.parent.mkdir(parents=True, exist_ok=True)
        unit.write_text(unit_text(user, run_as))
        made = not config.exists()
        if made:
            config.parent.mkdir(parents=True, exist_ok=True)
            config.write_text(CONFIG_TEMPLATE)
    except OSError as err:
        hint = "" if user else " (the system unit needs root: sudo, or --user for your own)"
        raise ConfigError(f"cannot write {err.filename}: {err.strerror}{hint}") from err
    return unit, config, made


class Notifier:
    """sd_notify: one datagram per state to the socket systemd names in $NOTIFY_SOCKET.
    Without it (not under systemd) every call does nothing."""

    def __init__(self, environ=os.environ):
        self.address = environ.get("NOTIFY_SOCKET", "")
        if self.address.startswith("@"):      # an abstract socket
            self.address = "\0" + self.address[1:]
        self.sock = None
        if self.address:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError as err:
                log.warning("cannot talk to systemd (%s)", err)
        self.watchdog_s: float | None = None
        usec, pid = environ.get("WATCHDOG_USEC"), environ.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_s = int(usec) / 1e6
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number of microseconds: no watchdog", usec)
        self.status = ""

    @property
    def active(self) -> bool:
        return self.sock is not None

    def send(self, *fields: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as err:     # systemd restarting, say: never a reason to stop the music
            log.debug("sd_notify %s: %s", fields, err)

    def set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            self.send(f"STATUS={status}")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
