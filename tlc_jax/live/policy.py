"""What the operator lets device records do: the addresses devices may reach, the local
folders `folder` devices may read, and how large a frame may be.

Device records come from API users (a write key), so every place that writes one (the
API's create / edit / CSV import, `devices import`) checks it against the operator's
`DevicePolicy`, and the run-time confines the devices it polls by the same policy:

- URLs (`device.urls()`): http(s) only, and no loopback, private, link-local or
  metadata address unless the allow-list names it (`--allow`; `ssrf.check_url`, no DNS
  query). The run-time checks again at every connection (`ssrf.GuardedBackend`): a
  host name that resolves to a forbidden address is refused there.
- `folder` devices read the server's own files: they need an API key with the admin
  scope (`ADMIN_KINDS`, enforced by the API), an absolute path under one of the
  folders the operator allows (`--folder-root`, none by default: no folder device at
  all), resolved with its symbolic links; `Folder.fetch` checks every file it reads.
- `max_bytes` / `max_pixels` given to a device may not exceed the operator's bounds
  (`--max-frame-bytes`, `--max-frame-pixels`); the run-time clamps a stored device to
  them too (rows written before the bound, or around the registry).

    policy = DevicePolicy.from_options(allow=["127.0.0.1"], folder_roots=["/srv/cams"])
    policy.problems(spec)    # [] or what is wrong, each with the fix
    policy.confine(device)   # the run-time's copy: roots set, limits clamped

Give `serve`, `run` and `devices import` the same options, so devices are refused when
written rather than failing when polled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from tlc_jax.live import ssrf
from tlc_jax.live.devices import DEFAULT_MAX_BYTES

__all__ = ["ADMIN_KINDS", "DEFAULT_MAX_FRAME_BYTES", "DEFAULT_MAX_FRAME_PIXELS",
           "DevicePolicy"]

# Kinds that read the server's own files: only an admin key may create or edit them.
ADMIN_KINDS = frozenset({"folder"})
DEFAULT_MAX_FRAME_BYTES = 4 * DEFAULT_MAX_BYTES  # 32 MiB: the most a device may ask for.
DEFAULT_MAX_FRAME_PIXELS = 100_000_000  # 2.5 x the per-device default.


@dataclasses.dataclass(frozen=True)
class DevicePolicy:
    allow: ssrf.AllowList = ssrf.EMPTY
    folder_roots: tuple[Path, ...] = ()  # Resolved, existing folders.
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS

    @classmethod
    def from_options(cls, allow: Iterable[str] | str | None = (),
                     folder_roots: Iterable[str] = (),
                     max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                     max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS) -> DevicePolicy:
        """From command-line values; ValueError says which one is wrong."""
        roots = []
        for root in folder_roots:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise ValueError(f"--folder-root {root}: no such folder.")
            roots.append(path.resolve())
        for flag, value in (("--max-frame-bytes", max_frame_bytes),
                            ("--max-frame-pixels", max_frame_pixels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a whole number >= 1; got {value!r}.")
        return cls(ssrf.AllowList.parse(allow), tuple(dict.fromkeys(roots)),
                   max_frame_bytes, max_frame_pixels)

    def problems(self, spec: Any) -> list[str]:
        """What the operator does not allow in a valid device record (a
        `registry.DeviceSpec`: kind, params, device()), each with its fix (each a
        `registry.Problem`, which names the parameter it is about)."""
        from tlc_jax.live.registry import Problem

        out = []
        device = spec.device()
        url_field = next((f"params.{k}" for k in ("url", "url_template")
                          if k in spec.params), "params")
        for url in getattr(device, "urls", lambda: [])():
            try:
                ssrf.check_url(url, self.allow)
            except ValueError as e:
                out.append(Problem(self._url_problem(url, str(e)), url_field))
        if spec.kind in ADMIN_KINDS:
            out += [Problem(text, "params.path")
                    for text in self._folder_problems(str(spec.params.get("path", "")))]
        for key, bound, flag in (("max_bytes", self.max_frame_bytes, "--max-frame-bytes"),
                                 ("max_pixels", self.max_frame_pixels,
                                  "--max-frame-pixels")):
            value = spec.params.get(key)
            if isinstance(value, (int, float)) and value > bound:
                out.append(Problem(f"{key} {value} is above this server's limit of {bound} "
                                   f"(the operator's {flag})", f"params.{key}"))
        return out

    def _url_problem(self, url: str, message: str) -> str:
        message = message.rstrip(".")
        if "is refused" not in message or "(metadata)" in message:
            return message  # Scheme, syntax, cloud metadata: no allow-list should help.
        try:
            import httpx

            host = ssrf._normalize_host(httpx.URL(url).host)
        except Exception:  # noqa: BLE001 - the message stands without the hint.
            return message
        message = message.split("; devices may reach it", 1)[0]
        return (f"{message}; if it is yours, the operator can allow it with --allow "
                f"{host} (on serve, run and devices import)")

    def _folder_problems(self, path: str) -> list[str]:
        if not self.folder_roots:
            return ["folder devices are off: they read this server's own files, and the "
                    "operator allows no folder (give serve, run and devices import "
                    "--folder-root DIR)"]
        if not Path(path).is_absolute():
            return [f"path {path!r} must be an absolute folder path"]
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in self.folder_roots):
            roots = ", ".join(str(r) for r in self.folder_roots)
            return [f"path {path} is outside the folders the operator allows ({roots}; "
                    f"--folder-root), links resolved"]
        return []

    def confine(self, device: Any) -> Any:
        """The device as the run-time polls it: a folder device gets the allowed roots,
        `max_bytes` / `max_pixels` are clamped to the bounds. Changes and returns it."""
        if getattr(device, "kind", None) in ADMIN_KINDS and hasattr(device, "roots"):
            device.roots = self.folder_roots
        for key, bound in (("max_bytes", self.max_frame_bytes),
                           ("max_pixels", self.max_frame_pixels)):
            value = getattr(device, key, None)
            if isinstance(value, int) and value > bound:
                setattr(device, key, bound)
        return device
