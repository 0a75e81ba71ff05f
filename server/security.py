"""Who may reach the server and what it tells them (standard library only; the gRPC side is :mod:`dropnet.server.auth`).

- TLS files (``--tls-cert``, ``--tls-key``, ``--tls-client-ca``) are read and checked with the
  standard ``ssl`` module before the port is bound: an unreadable file, something that is not PEM,
  or a key that does not belong to the certificate is a :class:`ConfigError` naming the file.
- The bearer token (``--token-file``) is read once at start: one trailing newline is stripped, and an
  empty token, or one a client could not send as gRPC metadata, is refused.
- Binding a non-loopback address without TLS and without a token needs ``--insecure`` (then a warning).
- Clients see no provenance (training command line, configuration, file names) unless
  ``--expose-provenance``: :func:`public_manifest` keeps only :data:`PUBLIC_PROVENANCE`.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dropnet.core.errors import ConfigError
from dropnet.core.jsonfields import frozen
from dropnet.core.manifest import Manifest

if TYPE_CHECKING:
    from dropnet.server.settings import ServerSettings

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost",)
"""Host names taken as loopback without resolving them (any 127.0.0.0/8 or ::1 address is too)."""
BEARER = "Bearer"
"""The authorization scheme of the token (RFC 6750); the metadata value is ``Bearer TOKEN``."""
AUTHORIZATION = "authorization"
"""The gRPC metadata key that carries the token."""
PUBLIC_PROVENANCE = (
    ("created",),
    ("exporter",),
    ("config", "preset"),
    ("config", "target"),
    ("gates",),
)
"""The key paths of a manifest's ``source_run`` clients see by default: when it was made, by which
exporter, from which bundled preset (and the paper result it aims at), and the export's parity
gates. The command line, the training configuration (data paths, data directory), and the names
of the weights, module factory or ONNX file it came from are withheld."""
CERTIFICATE_MARKER = b"-----BEGIN CERTIFICATE-----"
PRIVATE_KEY_MARKER = b"PRIVATE KEY-----"
ENCRYPTED_KEY_MARKERS = (b"ENCRYPTED PRIVATE KEY-----", b"Proc-Type: 4,ENCRYPTED")

MISSING_TOKEN = f"this server needs a bearer token; expected '{AUTHORIZATION}: {BEARER} <token>'"
WRONG_TOKEN = f"the bearer token is not valid; expected '{AUTHORIZATION}: {BEARER} <token>' with the server's token"


@dataclass(frozen=True)
class TlsFiles:
    """The PEM bytes of a checked server (or client) identity, and of the CA its peers must be signed by."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None
    """Mutual TLS: clients must present a certificate this bundle signed (None: no client certificate asked for)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost``, an address in 127.0.0.0/8 or ``::1`` (an IPv4-mapped one too)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def check_exposure(settings: ServerSettings) -> None:
    """Refuse to serve a non-loopback address with neither TLS nor a token unless ``--insecure``; warn what is weak.

    Raises ConfigError naming the flags; with ``--insecure`` (or a token without TLS) a warning is logged.
    """
    host = settings.host
    if is_loopback(host):
        return
    tls, token = settings.tls_cert is not None, settings.token_file is not None
    if token and not tls:
        log.warning("serving %s with a token but without TLS: the token and every request travel in clear text; "
                    "give --tls-cert and --tls-key to encrypt them", host)
    if tls or token:
        return
    if not settings.insecure:
        raise ConfigError(
            f"--host {host} is not a loopback address, and neither TLS (--tls-cert, --tls-key) nor a token "
            f"(--token-file) is set, so anyone who can reach the port could use every model; expected --tls-cert "
            f"and --tls-key and/or --token-file, or --insecure to serve it unprotected anyway"
        )
    log.warning("serving %s without TLS and without a token (--insecure): anyone who can reach this port can use "
                "every model", host)


def read_server_tls(settings: ServerSettings) -> TlsFiles | None:
    """The checked TLS files of ``settings`` (None without ``--tls-cert``); ConfigError naming a bad file."""
    if settings.tls_cert is None or settings.tls_key is None:  # the settings refuse one without the other
        return None
    files = read_key_pair(settings.tls_cert, settings.tls_key, "--tls-cert", "--tls-key")
    if settings.tls_client_ca is None:
        return files
    return replace(files, client_ca=read_ca_bundle(settings.tls_client_ca, "--tls-client-ca"))


def read_key_pair(cert: Path, key: Path, cert_flag: str, key_flag: str) -> TlsFiles:
    """A PEM certificate chain and the unencrypted private key that belongs to it; ConfigError naming the bad file."""
    chain = _read_pem(cert, cert_flag, CERTIFICATE_MARKER, "a PEM certificate chain (BEGIN CERTIFICATE)")
    private_key = _read_pem(key, key_flag, PRIVATE_KEY_MARKER, "a PEM private key (BEGIN PRIVATE KEY)")
    if any(marker in private_key for marker in ENCRYPTED_KEY_MARKERS):
        raise ConfigError(f"{key_flag} {key}: the private key is encrypted; expected an unencrypted PEM key "
                          f"(protect it with file permissions instead)")
    _load_certificates(chain, cert_flag, cert, "a PEM certificate chain")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except (ssl.SSLError, OSError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"{key_flag} {key} does not match {cert_flag} {cert}; expected the private key "
                              f"of that certificate") from None
        raise ConfigError(f"{key_flag} {key}: not a usable private key ({exc}); expected a PEM private key "
                          f"(RSA or EC)") from None
    return TlsFiles(chain, private_key)


def read_ca_bundle(path: Path, flag: str) -> bytes:
    """The PEM bytes of a bundle of CA certificates; ConfigError naming the file if it holds none or is unreadable."""
    data = _read_pem(path, flag, CERTIFICATE_MARKER, "a PEM bundle of CA certificates (BEGIN CERTIFICATE)")
    _load_certificates(data, flag, path, "a PEM bundle of CA certificates")
    return data


def read_token(path: str | Path, flag: str = "--token-file") -> str:
    """The bearer token stored in ``path`` without its one trailing newline; ConfigError when empty or unsendable.

    A token must be printable ASCII without spaces (what gRPC metadata and ``Bearer TOKEN`` can carry).
    """
    try:
        text = Path(path).read_bytes().decode("ascii")
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be read ({exc.strerror or exc}); expected a file holding "
                          f"the bearer token") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag} {path}: the token is not ASCII; expected printable ASCII characters "
                          f"without spaces") from None
    token = text.removesuffix("\n").removesuffix("\r")
    if not token:
        raise ConfigError(f"{flag} {path} is empty; expected a file holding the bearer token "
                          f"(e.g. written by `openssl rand -hex 32`)")
    if not all("!" <= char <= "~" for char in token):
        raise ConfigError(f"{flag} {path}: the token holds a space, a control character or more than one "
                          f"line; expected one line of printable ASCII characters without spaces")
    return token


def bearer_value(token: str) -> str:
    """The ``authorization`` metadata value that carries ``token``."""
    return f"{BEARER} {token}"


def public_manifest(manifest: Manifest) -> Manifest:
    """``manifest`` as clients see it without ``--expose-provenance``: ``source_run`` cut to
    :data:`PUBLIC_PROVENANCE`."""
    return replace(manifest, source_run=frozen(_kept(manifest.source_run, PUBLIC_PROVENANCE)))


def _kept(value: Mapping[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """The parts of the mapping ``value`` at ``paths`` (key paths), nested as they were; absent ones left out."""
    kept: dict[str, Any] = {}
    for key in dict.fromkeys(path[0] for path in paths):
        if key not in value:
            continue
        inner = [path[1:] for path in paths if path[0] == key]
        if () in inner:
            kept[key] = value[key]
        elif isinstance(value[key], Mapping):
            kept[key] = _kept(value[key], tuple(inner))
    return kept


def _read_pem(path: Path, flag: str, marker: bytes, expected: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot be read ({exc.strerror or exc}); expected {expected}") from None
    if marker not in data:
        raise ConfigError(f"{flag} {path} holds no {marker.decode()!r} block; expected {expected}")
    return data


def _load_certificates(data: bytes, flag: str, path: Path, expected: str) -> None:
    """Parse every certificate of ``data`` (into a throw-away context); ConfigError naming ``path`` if one is bad."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(
            f"{flag} {path}: a certificate in it cannot be parsed ({exc}); expected {expected}"
        ) from None


def _no_password() -> bytes:
    """The password callback of ``load_cert_chain``: refuse, so that OpenSSL never prompts on the terminal."""
    raise ConfigError("the private key asks for a password; expected an unencrypted PEM key")


def token_refusal(values: Sequence[str], token: str) -> str | None:
    """Why a call whose ``authorization`` values (gRPC metadata or HTTP headers) are ``values`` is refused, or None
    when one of them is ``Bearer TOKEN`` with the server's ``token`` (compared in constant time, scheme in any case).
    The message never quotes what was sent."""
    if not values:
        return MISSING_TOKEN
    expected = token.encode("ascii")
    matches = [hmac.compare_digest(_bearer_token(value), expected) for value in values]
    return None if any(matches) else WRONG_TOKEN


def _bearer_token(value: str) -> bytes:
    """The token of an ``authorization`` value ``Bearer TOKEN`` (scheme case-insensitive); b"" for any other value."""
    scheme, _, token = value.partition(" ")
    return token.strip().encode("utf-8") if scheme.lower() == BEARER.lower() else b""
