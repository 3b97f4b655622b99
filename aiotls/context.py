"""SecureContext: Node's createSecureContext options turned into one OpenSSL SSL_CTX.

A context is immutable once built and is shared by every connection that uses it,
on either side (Node's contexts are too). Option names are the snake_case forms of
Node's; each bad value raises at once, naming the option: TypeError for a wrong
type, :class:`~aiotls.errors.TLSConfigError` (a ValueError) for material or values
OpenSSL refuses, with OpenSSL's reason in the message.

key, cert, ca, crl, pfx and dhparam take their material as contents (a ``str`` is PEM
text) or as an ``os.PathLike`` file to read (``pathlib.Path``); a file that cannot be
read raises the ``OSError`` of ``open`` (FileNotFoundError, ...) with the option named.
"""

import datetime
import difflib
import hashlib
import inspect
import math
import os
import re
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, TypedDict, TypeVar, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from . import _der
from ._checks import expect_bool, text, timeout
from ._openssl import TICKET_KEYS_LENGTH
from ._openssl import require as require_feature
from ._openssl.context import TLS_VERSIONS, NativeContext, Refused, new_context
from .ciphers import DEFAULT_CIPHERS
from .errors import TLSConfigError

__all__ = [
    "CONTEXT_OPTIONS",
    "CONTEXT_SPECS",
    "DEFAULT_ECDH_CURVE",
    "ContextOptions",
    "KeyEntry",
    "Opt",
    "PfxEntry",
    "SecureContext",
    "TLSVersion",
    "create_secure_context",
]

_VERSIONS = TLS_VERSIONS

#: Key and certificate material: PEM text (str or bytes), or a file to read (os.PathLike).
Pem = str | bytes | os.PathLike[str]
#: The protocol versions min_version and max_version take.
TLSVersion = Literal["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Opt:
    """One option's documentation, kept beside its type: ``Annotated[type, Opt(...)]``.

    The options TypedDicts are the single table of option names: mypy checks calls
    against them, and the "unknown option" check, help() and the docs read them.
    ``default`` is shown when not None (an absent option is "not set"); ``node`` is Node's
    name when it is not the camelCase of ours ("" when Node has none). ``check`` takes
    (name, value given or default) and returns the value to use, raising TypeError/ValueError
    naming the option (:func:`validated` runs them); None where the option is checked with
    others, where they are combined (key/cert/pfx pairing, the protocol versions, stapling).
    """

    doc: str
    default: object = None
    node: str | None = None
    check: Callable[[str, Any], object] | None = None


def option_specs(table: type) -> dict[str, Opt]:
    """The options of a TypedDict of this table, in declaration order, with their Opt."""
    specs = {}
    for name, hint in table.__annotations__.items():
        opts = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Opt)]
        if len(opts) != 1:
            raise TypeError(f"{table.__name__}.{name}: declare it as Annotated[type, Opt(...)]")
        specs[name] = opts[0]
    return specs


def validated(specs: Mapping[str, Opt], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``specs``: its check's value (of the value given, else the default),
    or, where it is checked with others, the value given (None when absent). A bad value
    raises here, at the call that received it, naming the option."""
    values = {}
    for name, opt in specs.items():  # a loop, not a comprehension: warnings' stacklevel
        if opt.check is None:
            values[name] = given.get(name)
        else:
            values[name] = opt.check(name, given.get(name, opt.default))
    return values


def option_names(table: type) -> frozenset[str]:
    """The names a TypedDict of this table allows."""
    return frozenset(option_specs(table))


def option_lines(table: type) -> list[str]:
    """One reST bullet per option, for docstrings: ``- ``name``: what it does (default)``."""
    lines = []
    for name, opt in option_specs(table).items():
        default = "" if opt.default is None else f" (default ``{opt.default!r}``)"
        lines.append(f"- ``{name}``: {opt.doc}{default}")
    return lines


def with_options(*groups: tuple[str, type]) -> Callable[[_F], _F]:
    """Append each group's heading and option lines to the function's docstring, so that
    ``help()`` lists every option the function takes, one line each."""

    def document(func: _F) -> _F:
        parts = [inspect.cleandoc(func.__doc__ or "")]
        for heading, table in groups:
            parts.append(f"{heading}:\n\n" + "\n".join(option_lines(table)))
        func.__doc__ = "\n\n".join(parts) + "\n"
        return func

    return document


class KeyEntry(TypedDict):
    """A key with its own passphrase (Node's ``{pem, passphrase}``), in ``key=``."""

    pem: Pem
    passphrase: NotRequired[str | bytes]


class PfxEntry(TypedDict):
    """A PKCS#12 with its own passphrase (Node's ``{buf, passphrase}``), in ``pfx=``."""

    buf: bytes | os.PathLike[str]
    passphrase: NotRequired[str | bytes]


# The checkers the context options' Opt(check=...) name, beside the generic ones of
# aiotls._checks: (option, value given or default) -> what create_secure_context uses.


def _passphrase(option: str, value: object) -> bytes | None:
    """A passphrase (str or bytes) as bytes, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    raise TypeError(f"{option}: expected str or bytes, got {type(value).__name__}")


def _trust(option: str, value: object) -> list[x509.Certificate] | None:
    """The CA certificates of ``ca`` (None: the system store)."""
    return None if value is None else _certs(option, value)


def _crls(option: str, value: object) -> list[x509.CertificateRevocationList] | None:
    """The revocation lists of ``crl``, each parsed and not yet expired, or None."""
    if value is None:
        return None
    crls = []
    now = datetime.datetime.now(datetime.UTC)
    for pem in _pem_list(option, value):
        try:
            loaded = x509.load_pem_x509_crl(pem)
        except ValueError as exc:
            raise TLSConfigError(f"{option}: cannot parse CRL: {exc}") from None
        next_update = loaded.next_update_utc
        if next_update is not None and next_update < now:
            raise TLSConfigError(f"{option}: CRL has expired (nextUpdate {next_update:%Y-%m-%d})")
        crls.append(loaded)
    return crls


def _flags(option: str, value: object) -> int | None:
    """An int bitmask of OpenSSL's SSL_OP_* options, or None."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise TypeError(f"{option}: expected an int bitmask of OpenSSL options")
    return value


def _session_id_context(option: str, value: object) -> bytes | None:
    """str or bytes naming the session cache, as bytes (their SHA-256 beyond OpenSSL's 32)."""
    if value is None:
        return None
    sid = value.encode() if isinstance(value, str) else value
    if not isinstance(sid, bytes):
        raise TypeError(f"{option}: expected str or bytes, got {type(value).__name__}")
    return hashlib.sha256(sid).digest() if len(sid) > 32 else sid


def _session_timeout(option: str, value: object) -> int | None:
    """Positive seconds, in whole seconds as OpenSSL counts them, or None."""
    if value is None:
        return None
    seconds = timeout(option, value)
    if not 0 < seconds < math.inf:
        raise ValueError(f"{option}: must be positive and finite, got {value!r}")
    return int(seconds)


def _protocols(option: str, value: object) -> list[bytes] | None:
    """ALPN/NPN protocol names (str or bytes, 1 to 255 bytes each) in order, or None."""
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"{option}: expected a list of protocol names, got {type(value).__name__}")
    names = []
    for proto in value:
        raw = proto.encode() if isinstance(proto, str) else proto
        if not isinstance(raw, bytes):
            raise TypeError(f"{option}: expected protocol names as str or bytes, got {proto!r}")
        if not 0 < len(raw) < 256:
            raise ValueError(f"{option}: invalid protocol name {proto!r}")
        names.append(raw)
    return names


def _dhparam(option: str, value: object) -> bytes | None:
    """PEM DH parameters whose prime has 1024 bits or more (fewer than 2048 warns), or None."""
    if value is None:
        return None
    pem = _read(option, value)
    try:  # DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER, ... }
        der = _der.pem_body(pem)
        (_, body, end), *_ = _der.items(der)
        (tag, start, stop), *_ = _der.items(der, body, end)
        if tag != 0x02:
            raise ValueError("no prime")
        bits = int.from_bytes(der[start:stop], "big").bit_length()
    except (ValueError, IndexError) as exc:
        raise TLSConfigError(f"{option}: cannot parse DH parameters: {exc}") from None
    if bits < 1024:
        raise TLSConfigError(
            f"{option}: DH parameter is {bits} bits, less than 1024", code="ERR_TLS_DH_PARAM_SIZE"
        )
    if bits < 2048:
        # stacklevel: here, validated(), create_secure_context, its caller.
        warnings.warn(
            f"{option}: {bits}-bit DH parameters are weak; use 2048 or more", stacklevel=4
        )
    return pem


def _ticket_keys(option: str, value: object) -> bytes | None:
    """80 bytes of ticket keys (see :func:`check_ticket_keys`), or None."""
    return None if value is None else check_ticket_keys(option, value)


class _ContextOptionsBase(TypedDict, total=False):
    """Every context option but ``alpn_protocols``, which a server may give as a callable."""

    key: Annotated[
        Pem | KeyEntry | Sequence[Pem | KeyEntry] | None,
        Opt("private key(s): PEM, a Path, {pem, passphrase}, or a list; matched to certs by key"),
    ]
    cert: Annotated[
        Pem | Sequence[Pem] | None,
        Opt("certificate chain(s), leaf first: PEM, a Path, or a list of chains (one per key)"),
    ]
    pfx: Annotated[
        bytes | os.PathLike[str] | PfxEntry | Sequence[bytes | os.PathLike[str] | PfxEntry] | None,
        Opt("PKCS#12 key and chain: bytes, a Path, {buf, passphrase}, or a list of them"),
    ]
    passphrase: Annotated[
        str | bytes | None,
        Opt(
            "decrypts encrypted keys and pfx (material that is not encrypted ignores it)",
            check=_passphrase,
        ),
    ]
    ca: Annotated[
        Pem | Sequence[Pem] | None,
        Opt(
            "trusted CA certificates (PEM, a Path, or a list); they replace the system store",
            check=_trust,
        ),
    ]
    crl: Annotated[
        Pem | Sequence[Pem] | None,
        Opt("revocation lists (PEM, a Path, or a list), checked for the whole chain", check=_crls),
    ]
    ciphers: Annotated[
        str,
        Opt(
            "OpenSSL cipher list for TLS 1.2 and lower (default: aiotls.DEFAULT_CIPHERS)",
            check=text,
        ),
    ]
    ciphersuites: Annotated[
        str | None,
        Opt("TLS 1.3 cipher suites, colon-separated (default: OpenSSL's)", node="", check=text),
    ]
    honor_cipher_order: Annotated[
        bool,
        Opt(
            "a server picks the cipher by its own order, not the client's",
            default=True,
            check=expect_bool,
        ),
    ]
    min_version: Annotated[TLSVersion | None, Opt("the lowest protocol version", default="TLSv1.2")]
    max_version: Annotated[
        TLSVersion | None, Opt("the highest protocol version (default: TLSv1.3)")
    ]
    secure_protocol: Annotated[
        str | None,
        Opt("Node's method name such as 'TLSv1_2_method' (instead of min/max_version)"),
    ]
    secure_options: Annotated[
        int | None, Opt("OpenSSL SSL_OP_* flags (an int) to set as well", check=_flags)
    ]
    session_id_context: Annotated[
        str | bytes | None,
        Opt(
            "names the session cache (default: a digest of the certs, ca and request_cert)",
            check=_session_id_context,
        ),
    ]
    session_timeout: Annotated[
        float | None,
        Opt("seconds a session stays resumable (default: OpenSSL's)", check=_session_timeout),
    ]
    ticket_keys: Annotated[
        bytes | None,
        Opt(
            "80 bytes: 16-byte name, 32-byte HMAC key, 32-byte AES key (OpenSSL's layout)",
            check=_ticket_keys,
        ),
    ]
    request_cert: Annotated[
        bool,
        Opt(
            "a server asks the client for a certificate (checked against ca)",
            default=False,
            check=expect_bool,
        ),
    ]
    reject_unauthorized: Annotated[
        bool,
        Opt(
            "refuse a peer whose certificate or identity fails the checks",
            default=True,
            check=expect_bool,
        ),
    ]
    ecdh_curve: Annotated[
        str | None,
        Opt(
            "key exchange groups: a name, a colon list, or 'auto' (OpenSSL's list, the default)",
            check=text,
        ),
    ]
    dhparam: Annotated[
        Pem | None,
        Opt(
            "DH parameters (PEM or a Path) of 1024 bits or more; without them, no DHE",
            check=_dhparam,
        ),
    ]
    npn_protocols: Annotated[
        Sequence[str | bytes] | None,
        Opt(
            "NPN protocols offered or accepted, in preference order",
            node="NPNProtocols",
            check=_protocols,
        ),
    ]


class ContextOptions(_ContextOptionsBase, total=False):
    """The keywords of :func:`create_secure_context` (Node's ``createSecureContext``)."""

    alpn_protocols: Annotated[
        Sequence[str | bytes] | None,
        Opt(
            "ALPN protocols a client offers or a server accepts, in preference order",
            node="ALPNProtocols",
            check=_protocols,
        ),
    ]


#: Every option of create_secure_context, with its Opt.
CONTEXT_SPECS = option_specs(ContextOptions)
#: Every keyword create_secure_context accepts (front doors pass these through).
CONTEXT_OPTIONS = frozenset(CONTEXT_SPECS)

#: Names that asyncio, the ssl module and Node users reach for, and aiotls's option for each.
_SYNONYMS = {
    "server_hostname": "servername", "hostname": "servername", "sni": "servername",
    "ssl": "context", "ssl_context": "context", "secure_context": "context",
    "cafile": "ca", "capath": "ca", "cadata": "ca", "certfile": "cert", "keyfile": "key",
    "password": "passphrase", "ssl_handshake_timeout": "handshake_timeout",
    "ssl_shutdown_timeout": "shutdown_timeout", "check_hostname": "check_server_identity",
    "verify_mode": "reject_unauthorized", "alpn": "alpn_protocols",
    "alpn_callback": "alpn_protocols", "npn": "npn_protocols",
    "keylog_filename": "sslkeylogfile",
}  # fmt: skip
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _likely_option(name: str, candidates: Collection[str]) -> str | None:
    """The option ``name`` most likely meant: its snake_case form (Node's camelCase names),
    a known synonym, or the closest spelling."""
    snake = _CAMEL_HUMP.sub("_", name).lower()
    if snake in candidates or snake in _SYNONYMS:
        return _SYNONYMS.get(snake, snake)
    close = difflib.get_close_matches(snake, candidates, n=1, cutoff=0.7)
    return close[0] if close else None


def unknown_options(
    where: str,
    names: Collection[str],
    known: Collection[str],
    elsewhere: Mapping[str, str] | None = None,
) -> TypeError:
    """The TypeError for keywords ``where`` does not take, each with the option it likely meant.

    ``known`` are the names ``where`` accepts; ``elsewhere`` maps names it does not (a
    server option given to a client) to what they are.
    """
    other = elsewhere or {}
    parts = []
    for name in sorted(names):
        guess = _likely_option(name, [*known, *other])
        if name in other:
            hint = f" ({other[name]})"
        elif guess is None:
            hint = ""
        elif guess in known:
            hint = f" (did you mean {guess!r}?)"
        else:  # a synonym's target that ``where`` does not take: a connection option
            where_it_goes = other.get(guess, f"an option of the connection, not of {where}")
            hint = f" (did you mean {guess!r}? {where_it_goes})"
        parts.append(f"unknown option {name!r}{hint}")
    return TypeError(f"{where}: {'; '.join(parts)}")


#: OpenSSL's own default group list (3.5+): post-quantum X25519MLKEM768 and X25519 key
#: shares in the first flight, then the classic curves; "?" skips names a build lacks.
DEFAULT_ECDH_CURVE = (
    "?*X25519MLKEM768 / ?*X25519:?secp256r1 / ?X448:?secp384r1:?secp521r1 / ?ffdhe2048:?ffdhe3072"
)

# Node's secureProtocol method names -> (min, max) versions; None leaves the bound open.
_METHODS: dict[str, tuple[int | None, int | None]] = {
    prefix + suffix: bounds
    for prefix, bounds in {
        "TLS": (None, None),
        "SSLv23": (None, None),
        "TLSv1": (TLS_VERSIONS["TLSv1"], TLS_VERSIONS["TLSv1"]),
        "TLSv1_1": (TLS_VERSIONS["TLSv1.1"], TLS_VERSIONS["TLSv1.1"]),
        "TLSv1_2": (TLS_VERSIONS["TLSv1.2"], TLS_VERSIONS["TLSv1.2"]),
    }.items()
    for suffix in ("_method", "_server_method", "_client_method")
}

_SHA256 = hashes.SHA256()
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_PEM_BEGIN = b"-----BEGIN "
#: Files are read up to this size (a system CA bundle is ~200 KiB); larger is a mistake.
_MAX_FILE = 16 * 2**20


def _each(value: object) -> list[object]:
    """One option value or a list (or tuple) of them, as a list."""
    return list(value) if isinstance(value, list | tuple) else [value]


def _given(options: Mapping[str, Any], name: str) -> list[object]:
    """An option's values as a list (none when it is absent or None)."""
    value = options.get(name)
    return [] if value is None else _each(value)


def _names_file(value: str | bytes) -> bool:
    """Whether a str/bytes value that is not PEM is the name of an existing file."""
    return len(value) < 4096 and os.path.isfile(value)


def _read(option: str, value: object, *, pem: bool = True) -> bytes:
    """The bytes of one value: an os.PathLike is a file to read, str or bytes the data itself.

    Data without a PEM block fails here, saying what it looks like (a file name meant as
    a path, say) rather than leaving a parser to report garbage. PKCS#12 (``pem=False``)
    is binary: bytes or a path, never a str.
    """
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        try:
            with open(path, "rb") as f:
                data = f.read(_MAX_FILE + 1)
        except OSError as exc:  # FileNotFoundError and kin, naming the option and the path
            raise OSError(exc.errno, f"{option}: {exc.strerror}", path) from None
        if len(data) > _MAX_FILE:
            raise TLSConfigError(f"{option}: file {path!r} is larger than {_MAX_FILE >> 20} MiB")
        if pem and _PEM_BEGIN not in data:
            raise TLSConfigError(f"{option}: no PEM data ('-----BEGIN') in file {path!r}")
        return data
    if isinstance(value, str | bytes):
        data = value.encode() if isinstance(value, str) else value
        if pem and _PEM_BEGIN in data:
            return data
        if _names_file(value):
            name = os.fsdecode(value)
            raise TLSConfigError(
                f"{option}: got a file name {name!r}, not {'PEM' if pem else 'PKCS#12'} data;"
                f" pass pathlib.Path({name!r}) or the file's contents"
            )
        if pem:
            raise TLSConfigError(
                f"{option}: expected PEM data ('-----BEGIN ...') or a pathlib.Path; got a"
                f" {type(value).__name__} of length {len(value)} that is neither PEM nor the"
                " name of an existing file"
            )
        if isinstance(value, bytes):
            return data
    expected = "PEM str or bytes" if pem else "the PKCS#12 bytes"
    raise TypeError(f"{option}: expected {expected} or a pathlib.Path, got {type(value).__name__}")


def _pem_list(option: str, value: object) -> list[bytes]:
    """One PEM value or a list of them (str, bytes, or os.PathLike files), as bytes each."""
    return [_read(option, item) for item in _each(value)]


def _certs(option: str, value: object) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for pem in _pem_list(option, value):
        try:
            certs += x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise TLSConfigError(f"{option}: cannot parse certificate: {exc}") from None
    return certs


def _version(option: str, value: object) -> int:
    if not isinstance(value, str):
        raise TypeError(f"{option}: expected a str such as 'TLSv1.2', got {type(value).__name__}")
    try:
        return _VERSIONS[value]
    except KeyError:
        raise TLSConfigError(
            f"{option}: unknown TLS version {value!r} (use one of {', '.join(_VERSIONS)})",
            code="ERR_TLS_INVALID_PROTOCOL_VERSION",
        ) from None


class SecureContext:
    """An immutable, shareable TLS configuration (Node's SecureContext).

    Build it with :func:`create_secure_context`; pass it as ``context=`` to the
    front doors or to :class:`~aiotls.TLSEngine`.
    """

    __slots__ = (
        "_alpn_list",
        "_ctx",
        "_options",
        "_prepared",
        "ca_certs",
        "certificates",
        "reject_unauthorized",
        "request_cert",
    )

    _ctx: NativeContext
    _alpn_list: list[bytes]
    _options: dict[str, Any]
    _prepared: set[str]
    certificates: list[x509.Certificate]
    ca_certs: list[x509.Certificate]
    request_cert: bool
    reject_unauthorized: bool

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("SecureContext is immutable; build a new one instead")

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    @property
    def options(self) -> dict[str, Any]:
        """The options this context was built from (a copy)."""
        return dict(self._options)

    @property
    def alpn_protocols(self) -> list[str]:
        """The ALPN protocols offered (client) or accepted in order (server)."""
        return [p.decode() for p in self._alpn_list]

    def _prepare(
        self,
        *,
        client_sessions: bool = False,
        session_store: bool = False,
        async_alpn: bool = False,
        new_sessions: bool = False,
        keylog: bool = False,
        client_hello: bool = False,
    ) -> None:
        """Check the extended features a front door's options need, and wire what costs
        every connection on the context something, only for contexts that ask.

        Called where options are configured (front doors, Server.set_secure_context),
        never because a connection started; idempotent and thread-safe. A missing feature
        raises TLSFeatureUnavailable naming the option. ``keylog`` (on_keylog) and
        ``new_sessions`` (on_new_session): OpenSSL formats key-log lines, and reports
        sessions, for every handshake once a callback is set (a few Python calls per
        handshake, ~2% of a server's handshake CPU). ``client_sessions`` (on_session):
        OpenSSL reports client sessions only with SSL_SESS_CACHE_CLIENT, which also keeps
        them in the context's cache. ``session_store`` (on_resume_session): lookups go to
        the store, never the cache.
        """
        if async_alpn:
            require_feature("client_hello_cb", "alpn_protocols (a selector that may await)")
        if client_hello:
            require_feature("client_hello_cb", "on_client_hello")
        if keylog and "keylog" not in self._prepared:
            self._ctx.enable_keylog()
            self._prepared.add("keylog")
        if new_sessions and "new" not in self._prepared:
            self._ctx.report_sessions("on_new_session")
            self._prepared.add("new")
        if client_sessions and "client" not in self._prepared:
            self._ctx.enable_client_session_cache("on_session")
            self._prepared.add("client")
        if session_store and "store" not in self._prepared:
            self._ctx.use_session_store("on_resume_session")
            self._prepared.add("store")

    def get_ticket_keys(self) -> bytes:
        """The 80 bytes of session ticket keys servers on this context use."""
        return self._ctx.get_ticket_keys("get_ticket_keys")

    def set_ticket_keys(self, keys: bytes) -> None:
        """Rotate the context's ticket keys (80 bytes; a bad value leaves the old ones)."""
        self._ctx.set_ticket_keys(check_ticket_keys("set_ticket_keys", keys), "set_ticket_keys")

    def __repr__(self) -> str:
        subjects = [c.subject.rfc4514_string() for c in self.certificates]
        return f"<SecureContext certs={subjects} alpn={self.alpn_protocols}>"


@with_options(("Options", ContextOptions))
def create_secure_context(**options: Unpack[ContextOptions]) -> SecureContext:
    """Build a :class:`SecureContext` from Node-style options (snake_case).

    Defaults: TLS 1.2 minimum, :data:`DEFAULT_CIPHERS`, the server's cipher order,
    and the system trust store for verifying servers (``ca`` replaces it).

    Material may be a ``pathlib.Path`` to read (see the module docstring). Keys pair
    with certificates by public key, in any order, and ``pfx`` (one, a list, or Node's
    ``{"buf", "passphrase"}``) adds to them; ``passphrase`` is ignored by material
    that is not encrypted, as in Node.
    """
    unknown = set(options) - CONTEXT_OPTIONS
    if unknown:
        raise unknown_options("create_secure_context", unknown, CONTEXT_OPTIONS)
    checked = validated(CONTEXT_SPECS, options)
    ctx = new_context()
    sc = object.__new__(SecureContext)

    _set_versions(ctx, checked)
    certs = _load_identity(ctx, checked)
    ca_certs = checked["ca"]
    if ca_certs is None:
        # The system trust, now, so that the context never changes once built (with a
        # hashed directory of CAs this costs ~0.1 ms: certificates load per lookup).
        ctx.load_default_trust()
        ca_certs = []
    ctx.add_trust(ca_certs)
    if checked["crl"] is not None:
        ctx.add_crls(checked["crl"])

    # Like Node, no DHE without dhparam: OpenSSL would otherwise pick RFC 7919 groups.
    ciphers = checked["ciphers"]
    if ciphers is None:
        ciphers = DEFAULT_CIPHERS if checked["dhparam"] else DEFAULT_CIPHERS + ":!kDHE"
    _openssl_option(ctx.set_cipher_list, "ciphers", ciphers)
    if checked["ciphersuites"] is not None:
        _openssl_option(ctx.set_ciphersuites, "ciphersuites", checked["ciphersuites"])
    if checked["honor_cipher_order"]:
        ctx.prefer_server_ciphers()
    if checked["secure_options"] is not None:
        ctx.add_options(checked["secure_options"])
    if checked["session_timeout"] is not None:
        ctx.set_session_timeout(checked["session_timeout"])

    _set_key_exchange(ctx, checked)
    _set_extended(ctx, checked)
    alpn_list: list[bytes] = checked["alpn_protocols"] or []
    if alpn_list:
        ctx.set_alpn(alpn_list)

    sid = checked["session_id_context"]
    if sid is None:
        # As nginx derives it: servers configured alike resume each other's sessions.
        digest = hashlib.sha256()
        for cert in certs + ca_certs:
            digest.update(cert.fingerprint(cert.signature_hash_algorithm or _SHA256))
        digest.update(b"request_cert" if checked["request_cert"] else b"")
        sid = digest.digest()
    ctx.set_session_id_context(sid)

    sc._set(
        _ctx=ctx,
        _alpn_list=alpn_list,
        _options=dict(options),
        _prepared=set(),
        certificates=certs,
        ca_certs=ca_certs,
        request_cert=checked["request_cert"],
        reject_unauthorized=checked["reject_unauthorized"],
    )
    return sc


def _set_versions(ctx: NativeContext, options: Mapping[str, Any]) -> None:
    """min_version / max_version, or Node's secure_protocol method name (not both)."""
    method = options.get("secure_protocol")
    if method is not None:
        if options.get("min_version") is not None or options.get("max_version") is not None:
            raise TLSConfigError(
                "secure_protocol: cannot be combined with min_version/max_version",
                code="ERR_TLS_PROTOCOL_VERSION_CONFLICT",
            )
        if not isinstance(method, str):
            raise TypeError("secure_protocol: expected a method name such as 'TLSv1_2_method'")
        if method not in _METHODS:
            raise TLSConfigError(
                f"secure_protocol: unknown or disabled method {method!r}",
                code="ERR_TLS_INVALID_PROTOCOL_METHOD",
            )
        low, high = _METHODS[method]
        ctx.set_versions(low or TLS_VERSIONS["TLSv1"], high)
        return
    min_v = _version(
        "min_version", options.get("min_version") or CONTEXT_SPECS["min_version"].default
    )
    max_v = None
    if options.get("max_version") is not None:
        max_v = _version("max_version", options["max_version"])
        if max_v < min_v:
            raise TLSConfigError("max_version: lower than min_version")
    ctx.set_versions(min_v, max_v)


def _set_key_exchange(ctx: NativeContext, checked: Mapping[str, Any]) -> None:
    """ecdh_curve (a name, a colon list, or "auto") and dhparam (enables DHE suites)."""
    curve = checked["ecdh_curve"]
    if curve is not None and (not curve or (curve != "auto" and not ctx.set_groups(curve))):
        raise TLSConfigError(f"ecdh_curve: unknown or unsupported curve in {curve!r}")
    if checked["dhparam"] is not None:
        problem = ctx.set_dh_params(checked["dhparam"])
        if problem is not None:
            raise TLSConfigError(f"dhparam: OpenSSL refused the DH parameters: {problem}")


def _set_extended(ctx: NativeContext, checked: Mapping[str, Any]) -> None:
    """npn_protocols and ticket_keys: they need the extended OpenSSL access."""
    if checked["npn_protocols"] is not None:
        ctx.set_npn(checked["npn_protocols"])
    if checked["ticket_keys"] is not None:
        ctx.set_ticket_keys(checked["ticket_keys"], "ticket_keys")


def check_ticket_keys(option: str, keys: object) -> bytes:
    """Ticket keys are 80 bytes, OpenSSL's layout (16-byte name, 32-byte HMAC key,
    32-byte AES key): TypeError or TLSConfigError (a ValueError) naming ``option``."""
    if not isinstance(keys, bytes | bytearray | memoryview):
        raise TypeError(f"{option}: expected {TICKET_KEYS_LENGTH} bytes")
    data = bytes(keys)
    if len(data) != TICKET_KEYS_LENGTH:
        raise TLSConfigError(f"{option}: expected {TICKET_KEYS_LENGTH} bytes, got {len(data)}")
    return data


def _openssl_option(setter: Callable[[str], None], option: str, value: str) -> None:
    """Apply a string option, turning OpenSSL's refusal into a TLSConfigError."""
    try:
        setter(value)
    except Refused as exc:
        raise TLSConfigError(f"{option}: {exc} ({value!r})") from None


#: The two ways a PEM private key says it is encrypted (PKCS#8, and OpenSSL's legacy form).
_ENCRYPTED_KEY = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED")


def _load_key(pem: bytes, passphrase: bytes | None) -> Any:
    """A private key from PEM; the passphrase is used only if the key is encrypted.

    Node ignores a passphrase given with a plain key (one shared passphrase may serve
    several keys and pfx files, some of them unencrypted).
    """
    encrypted = _ENCRYPTED_KEY.search(pem) is not None
    try:
        return serialization.load_pem_private_key(pem, passphrase if encrypted else None)
    except TypeError as exc:  # encrypted, and no passphrase
        raise TLSConfigError(f"key: {exc}") from None
    except ValueError as exc:
        hint = " (bad passphrase?)" if encrypted else ""
        raise TLSConfigError(f"key: cannot load private key{hint}: {exc}") from None


def _load_pfx(item: object, passphrase: bytes | None) -> tuple[Any, list[x509.Certificate]]:
    """The key and chain of one pfx value: PKCS#12 bytes or path, or ``{"buf", "passphrase"}``.

    As for keys, a passphrase is ignored when the PKCS#12 turns out not to need it.
    """
    if isinstance(item, dict):
        data = _read("pfx", item.get("buf"), pem=False)
        passphrase = _passphrase("pfx", item.get("passphrase")) or passphrase
    else:
        data = _read("pfx", item, pem=False)
    error: ValueError | None = None
    for password in (passphrase, None) if passphrase is not None else (None,):
        try:
            key, leaf, extra = pkcs12.load_key_and_certificates(data, password)
            break
        except ValueError as exc:
            error = error or exc
    else:
        hint = "bad passphrase?" if passphrase is not None else "encrypted? give passphrase"
        raise TLSConfigError(f"pfx: cannot load PKCS#12 ({hint}): {error}") from None
    if key is None or leaf is None:
        raise TLSConfigError("pfx: the PKCS#12 holds no private key and certificate")
    return key, [leaf, *extra]


def _spki(key: Any) -> bytes:
    """A public key's SubjectPublicKeyInfo DER: what pairs a key with its certificate."""
    return bytes(key.public_bytes(serialization.Encoding.DER, _SPKI))


def _pair(
    keys: list[Any], chains: list[list[x509.Certificate]]
) -> list[tuple[Any, list[x509.Certificate]]]:
    """Give each key the chain whose leaf carries its public key, whatever the order (Node's
    test-tls-multi-key gives ``key=[ec, rsa], cert=[rsa, ec]``)."""
    free = list(chains)
    pairs, strays = [], []
    for n, key in enumerate(keys, 1):
        spki = _spki(key.public_key())
        chain = next((c for c in free if _spki(c[0].public_key()) == spki), None)
        if chain is None:
            strays.append((n, key))
        else:
            free.remove(chain)
            pairs.append((key, chain))
    if len(strays) > len(free):
        n = strays[len(free)][0]
        raise TLSConfigError(f"key: key #{n} has no certificate (no leaf in cert has its key)")
    if len(free) > len(strays):
        subject = free[len(strays)][0].subject.rfc4514_string()
        raise TLSConfigError(f"cert: no key given for the certificate {subject!r}")
    # As many strays as free chains: pair them in order and let OpenSSL say how they differ.
    return pairs + [(key, chain) for (_, key), chain in zip(strays, free, strict=True)]


def _load_identity(ctx: NativeContext, checked: Mapping[str, Any]) -> list[x509.Certificate]:
    """Install pfx and key/cert; returns our certificates, leaves first."""
    passphrase = checked["passphrase"]
    pairs = [_load_pfx(item, passphrase) for item in _given(checked, "pfx")]
    keys = []
    for item in _given(checked, "key"):
        if isinstance(item, dict):  # Node's {pem, passphrase}: the key's own passphrase wins
            own = _passphrase("key", item.get("passphrase"))
            keys.append(_load_key(_read("key", item.get("pem")), own or passphrase))
        else:
            keys.append(_load_key(_read("key", item), passphrase))
    chains = [_certs("cert", c) for c in _given(checked, "cert")]
    if not all(chains):
        raise TLSConfigError("cert: no certificate found in the PEM data")
    pairs += _pair(keys, chains)
    certs: list[x509.Certificate] = []
    for key, chain in pairs:
        try:
            ctx.use_identity(chain, key)
        except Refused as exc:
            raise TLSConfigError(f"key: {exc} (the key does not match cert)") from None
        certs += chain
    return certs
