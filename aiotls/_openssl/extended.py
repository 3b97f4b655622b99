"""Extended OpenSSL access: OpenSSL functions that cryptography's cffi bindings leave out.

cryptography's wheels link OpenSSL statically into ``hazmat/bindings/_rust.abi3.so`` and
export none of its symbols, and their cffi ``lib`` declares only what pyOpenSSL needs. The
wheels keep the static symbol table (``.symtab``), though, so a function's address is the
module's load bias (from ``/proc/self/maps``) plus the symbol's ``st_value``. A cffi
function pointer cast from that address, *with cryptography's own* ``ffi``, calls the very
OpenSSL that pyOpenSSL's ``SSL*`` / ``SSL_CTX*`` objects live in and accepts their cdata.

How the load bias is trusted
    ``ffi.addressof(lib, "F")`` on cryptography's compiled (out-of-line, API mode) ``lib``
    returns the address of cffi's ``_cffi_d_F`` wrapper, a local symbol that is also in the
    ``.symtab``. For several functions cffi has already resolved (``SSL_get_servername``,
    ``SSL_CTX_set_cert_cb``, ``SSL_CTX_set_options``, ``SSL_get_current_cipher``) the bias
    plus the symtab value of ``_cffi_d_F`` (or of ``F`` itself, should cffi ever hand out
    the real function) must equal cffi's address exactly; every probe cffi knows must
    agree and at least two must exist. The mapping is also required to be the file on
    disk (same path and inode), and each resolved function must land in an executable
    mapping of that file. Anything else (another OS, a stripped or system-linked build,
    a replaced file) makes the module *unavailable*, with a reason: the features that need
    it raise :class:`~aiotls.errors.TLSFeatureUnavailable`, and everything else works.

Ownership rules a caller must know
    * ``peer_tmp_key_info`` frees the ``EVP_PKEY`` that ``SSL_CTRL_GET_PEER_TMP_KEY``
      up-refs.
    * ``add_chain_cert`` uses ``larg=1`` ("add1"): OpenSSL takes its own reference, the
      caller keeps theirs. It attaches to the certificate most recently set with
      ``use_certificate`` on that context (one chain per certificate type).
    * The new-session callback returns 0, so OpenSSL keeps (and later drops) the
      reference it took for the callback; the ``SSL_SESSION*`` is valid only during the
      call (serialise it there, e.g. with :func:`session_der`).
    * The get-session callback answers DER; it is parsed with ``d2i_SSL_SESSION`` and
      returned with ``*copy = 0``, handing the new reference to OpenSSL (with the default
      ``*copy = 1`` OpenSSL would up-ref again and the session would leak).
    * Callback objects (and the NPN wire buffers they point OpenSSL at) are kept alive
      as long as the ``SSL_CTX*`` cdata they were installed on: pass the owning cdata
      (``SSL.Context._context``), not a temporary ``ffi.cast`` of it.
    * Every callback catches every exception and returns OpenSSL's failure value.
"""

from __future__ import annotations

import logging
import os
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import TLSFeatureUnavailable
from .binding import error_queue, ffi, lib, original_lib

__all__ = [
    "SSL_CTRL_CHAIN_CERT",
    "SSL_CTRL_GET_PEER_TMP_KEY",
    "SSL_CTRL_GET_TLSEXT_TICKET_KEYS",
    "SSL_CTRL_SET_GROUPS_LIST",
    "SSL_CTRL_SET_MAX_SEND_FRAGMENT",
    "SSL_CTRL_SET_TLSEXT_TICKET_KEYS",
    "TICKET_KEYS_LENGTH",
    "add_chain_cert",
    "available",
    "cipher_standard_name",
    "client_hello_ext",
    "client_hello_session_id",
    "ctx_ctrl",
    "features",
    "get_ticket_keys",
    "npn_negotiated",
    "peer_tmp_key_info",
    "require",
    "session_der",
    "session_id",
    "set_client_hello_cb",
    "set_get_session_cb",
    "set_groups_list",
    "set_max_send_fragment",
    "set_new_session_cb",
    "set_npn_advertised",
    "set_npn_select",
    "set_session_id",
    "set_ticket_keys",
    "ssl_ctrl",
    "unavailable_reason",
]

_log = logging.getLogger("aiotls")

# --- OpenSSL constants (include/openssl/ssl.h, tls1.h; unchanged from 1.1.1 to 4.0) ---------
SSL_CTRL_SET_MAX_SEND_FRAGMENT: Final = 52
SSL_CTRL_GET_TLSEXT_TICKET_KEYS: Final = 58
SSL_CTRL_SET_TLSEXT_TICKET_KEYS: Final = 59
SSL_CTRL_CHAIN_CERT: Final = 89
SSL_CTRL_SET_GROUPS_LIST: Final = 92
SSL_CTRL_GET_PEER_TMP_KEY: Final = 109

#: 16-byte key name + 32-byte HMAC secret + 32-byte AES key (as Node's ticketKeys).
TICKET_KEYS_LENGTH: Final = 80

_SSL_TLSEXT_ERR_OK: Final = 0
_SSL_TLSEXT_ERR_ALERT_FATAL: Final = 2
_SSL_TLSEXT_ERR_NOACK: Final = 3
_OPENSSL_NPN_NEGOTIATED: Final = 1
_OPENSSL_NPN_NO_OVERLAP: Final = 2
_SSL_CLIENT_HELLO_SUCCESS: Final = 1
_SSL_CLIENT_HELLO_ERROR: Final = 0
_SSL_CLIENT_HELLO_RETRY: Final = -1
_SSL_AD_INTERNAL_ERROR: Final = 80

# --- Signatures, spelled as OpenSSL's headers declare them ---------------------------------
# Callback parameters are written out structurally (cffi cannot see OpenSSL's typedef names
# such as SSL_CTX_npn_advertised_cb_func, but every type inside them is declared).
_NPN_ADVERTISED_CB: Final = "int (*)(SSL *, const unsigned char **, unsigned int *, void *)"
_NPN_SELECT_CB: Final = (
    "int (*)(SSL *, unsigned char **, unsigned char *, const unsigned char *, unsigned int, void *)"
)
_NEW_SESSION_CB: Final = "int (*)(SSL *, SSL_SESSION *)"
_GET_SESSION_CB: Final = "SSL_SESSION *(*)(SSL *, const unsigned char *, int, int *)"
_CLIENT_HELLO_CB: Final = "int (*)(SSL *, int *, void *)"

_SIGNATURES: Final[dict[str, str]] = {
    "SSL_CTX_ctrl": "long (*)(SSL_CTX *, int, long, void *)",
    "SSL_ctrl": "long (*)(SSL *, int, long, void *)",
    "SSL_CTX_sess_set_new_cb": f"void (*)(SSL_CTX *, {_NEW_SESSION_CB})",
    "SSL_CTX_sess_set_get_cb": f"void (*)(SSL_CTX *, {_GET_SESSION_CB})",
    "SSL_CTX_set_next_protos_advertised_cb": f"void (*)(SSL_CTX *, {_NPN_ADVERTISED_CB}, void *)",
    "SSL_CTX_set_next_proto_select_cb": f"void (*)(SSL_CTX *, {_NPN_SELECT_CB}, void *)",
    "SSL_select_next_proto": (
        "int (*)(unsigned char **, unsigned char *, const unsigned char *, unsigned int, "
        "const unsigned char *, unsigned int)"
    ),
    "SSL_get0_next_proto_negotiated": (
        "void (*)(const SSL *, const unsigned char **, unsigned int *)"
    ),
    "SSL_CTX_set_client_hello_cb": f"void (*)(SSL_CTX *, {_CLIENT_HELLO_CB}, void *)",
    "SSL_client_hello_get0_session_id": "size_t (*)(SSL *, const unsigned char **)",
    "SSL_client_hello_get0_ext": "int (*)(SSL *, unsigned int, const unsigned char **, size_t *)",
    "SSL_SESSION_get_id": "const unsigned char *(*)(const SSL_SESSION *, unsigned int *)",
    "SSL_SESSION_set1_id": "int (*)(SSL_SESSION *, const unsigned char *, unsigned int)",
    "SSL_CIPHER_standard_name": "const char *(*)(const SSL_CIPHER *)",
    "EVP_PKEY_get0_type_name": "const char *(*)(const EVP_PKEY *)",
}

#: Which symtab functions each feature needs.
_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "npn": (
        "SSL_CTX_set_next_protos_advertised_cb",
        "SSL_CTX_set_next_proto_select_cb",
        "SSL_select_next_proto",
        "SSL_get0_next_proto_negotiated",
    ),
    "ticket_keys": ("SSL_CTX_ctrl",),
    "resume_session": (
        "SSL_CTX_sess_set_new_cb",
        "SSL_CTX_sess_set_get_cb",
        "SSL_SESSION_get_id",
        "SSL_CTX_set_client_hello_cb",
        "SSL_client_hello_get0_session_id",
        "SSL_client_hello_get0_ext",
        "SSL_ctrl",
    ),
    "new_session_cb": ("SSL_CTX_sess_set_new_cb", "SSL_SESSION_get_id", "SSL_SESSION_set1_id"),
    "groups": ("SSL_CTX_ctrl",),
    "max_send_fragment": ("SSL_ctrl",),
    "peer_tmp_key": ("SSL_ctrl", "EVP_PKEY_get0_type_name"),
    "standard_cipher_name": ("SSL_CIPHER_standard_name",),
    "chain_per_cert": ("SSL_CTX_ctrl",),
    "client_hello_cb": (
        "SSL_CTX_set_client_hello_cb",
        "SSL_client_hello_get0_session_id",
        "SSL_client_hello_get0_ext",
        "SSL_ctrl",
    ),
}

#: Functions both cffi and the symtab know, used to validate the load bias.
_PROBES: Final = (
    "SSL_get_servername",
    "SSL_CTX_set_cert_cb",
    "SSL_CTX_set_options",
    "SSL_get_current_cipher",
)
_MIN_PROBES: Final = 2

# --- ELF64 ---------------------------------------------------------------------------------
_ELF_MAGIC: Final = b"\x7fELF"
_ELFCLASS64: Final = 2
_SHT_SYMTAB: Final = 2
_PT_LOAD: Final = 1
_STT_FUNC: Final = 2
_STB_LOCAL: Final = 0
_SHN_UNDEF: Final = 0
_SHN_XINDEX: Final = 0xFFFF


class _ElfError(Exception):
    """The file is not an ELF64 shared object this module can read."""


@dataclass
class _ElfSymbols:
    """What the resolver needs from the file: symbol values and the first segment."""

    values: dict[str, int]
    ambiguous: set[str]
    #: ``p_vaddr - p_offset`` of the PT_LOAD segment mapped from file offset 0.
    first_load_delta: int


def _read_elf_symbols(path: str, wanted: Iterable[str]) -> _ElfSymbols:
    """Read the defined FUNC symbols named in ``wanted`` from the ELF64 ``.symtab`` of path.

    A name that several symbols carry with different values (static functions of the same
    name in different objects) is reported in ``ambiguous`` rather than guessed; one global
    definition wins over local ones.
    """
    with open(path, "rb") as f:
        ident = f.read(64)
        if len(ident) < 64 or ident[:4] != _ELF_MAGIC:
            raise _ElfError("not an ELF file")
        if ident[4] != _ELFCLASS64:
            raise _ElfError("not a 64-bit ELF file")
        if ident[5] not in (1, 2):
            raise _ElfError("unknown ELF byte order")
        end = "<" if ident[5] == 1 else ">"
        (e_phoff, e_shoff) = struct.unpack_from(end + "QQ", ident, 0x20)
        e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from(
            end + "HHHHH", ident, 0x36
        )
        sh_fmt = struct.Struct(end + "IIQQQQIIQQ")
        ph_fmt = struct.Struct(end + "IIQQQQQQ")
        if e_shoff == 0 or e_shentsize < sh_fmt.size:
            raise _ElfError("no section headers")

        def section(index: int) -> tuple[int, ...]:
            f.seek(e_shoff + index * e_shentsize)
            return sh_fmt.unpack(f.read(sh_fmt.size))

        if e_shnum == 0 or e_shstrndx == _SHN_XINDEX:  # extended numbering
            zero = section(0)
            e_shnum = e_shnum or zero[5]
        f.seek(e_shoff)
        raw = f.read(e_shnum * e_shentsize)
        sections = [sh_fmt.unpack_from(raw, i * e_shentsize) for i in range(e_shnum)]
        symtabs = [s for s in sections if s[1] == _SHT_SYMTAB]
        if not symtabs:
            raise _ElfError("no .symtab (stripped build)")
        symtab_sh = symtabs[0]
        if symtab_sh[6] >= len(sections):
            raise _ElfError("bad .symtab string table link")
        strtab_sh = sections[symtab_sh[6]]
        f.seek(symtab_sh[4])
        symtab = f.read(symtab_sh[5])
        f.seek(strtab_sh[4])
        strtab = f.read(strtab_sh[5])

        delta: int | None = None
        if e_phoff and e_phentsize >= ph_fmt.size:
            f.seek(e_phoff)
            phraw = f.read(e_phnum * e_phentsize)
            for i in range(e_phnum):
                p_type, _, p_offset, p_vaddr, _, _, _, p_align = ph_fmt.unpack_from(
                    phraw, i * e_phentsize
                )
                # The segment the loader maps from file offset 0 (offset below one page).
                if p_type == _PT_LOAD and p_offset < max(p_align, 4096) and p_vaddr >= p_offset:
                    delta = p_vaddr - p_offset
                    break
        if delta is None:
            raise _ElfError("no loadable segment at file offset 0")

    # Map each wanted name to every strtab offset where exactly that string starts (this
    # also catches names the linker stored as the tail of a longer string).
    by_offset: dict[int, str] = {}
    for name in set(wanted):
        needle = name.encode() + b"\0"
        pos = strtab.find(needle)
        while pos != -1:
            by_offset[pos] = name
            pos = strtab.find(needle, pos + 1)

    found: dict[str, list[tuple[int, int]]] = {}
    sym_fmt = struct.Struct(end + "IBBHQQ")
    usable = len(symtab) - len(symtab) % sym_fmt.size
    for st_name, st_info, _other, st_shndx, st_value, _size in sym_fmt.iter_unpack(symtab[:usable]):
        sym_name = by_offset.get(st_name)
        if sym_name is None or st_info & 0xF != _STT_FUNC:
            continue
        if st_shndx == _SHN_UNDEF or st_value == 0:
            continue
        found.setdefault(sym_name, []).append((st_info >> 4, st_value))

    values: dict[str, int] = {}
    ambiguous: set[str] = set()
    for name, entries in found.items():
        globals_ = {v for bind, v in entries if bind != _STB_LOCAL}
        candidates = globals_ or {v for _, v in entries}
        if len(candidates) == 1:
            values[name] = candidates.pop()
        else:
            ambiguous.add(name)
    return _ElfSymbols(values, ambiguous, delta)


@dataclass
class _Mapping:
    """The load bias and executable ranges of the library in this process."""

    bias: int
    exec_ranges: list[tuple[int, int]] = field(default_factory=list)


def _find_mappings(path: str) -> list[_Mapping]:
    """Every mapping set (by offset-0 start) of ``path`` in ``/proc/self/maps``.

    A mapping is the file when its inode matches and either its path or its device does
    (overlay filesystems may show the lower device; bind mounts another path). A file
    replaced since it was loaded shows as "(deleted)" and does not match.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    starts: list[int] = []
    exec_ranges: list[tuple[int, int]] = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) < 6:
                continue
            addr, perms, offset, dev, inode, pathname = parts
            pathname = pathname.rstrip("\n")
            if int(inode) != st.st_ino or pathname.endswith(" (deleted)"):
                continue
            if pathname != real and dev != device:
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            if int(offset, 16) == 0:
                starts.append(lo)
            if "x" in perms:
                exec_ranges.append((lo, hi))
    return [_Mapping(start, exec_ranges) for start in starts]


def _library_path() -> str | None:
    """The shared object holding cryptography's OpenSSL (None if there is none)."""
    try:
        from cryptography.hazmat.bindings import _rust
    except ImportError:  # pragma: no cover - cryptography always has it
        return None
    return getattr(_rust, "__file__", None)


class _Resolver:
    """Finds, validates and caches OpenSSL function pointers from the static symbol table."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.reason: str | None = None
        self._values: dict[str, int] = {}
        self._ambiguous: set[str] = set()
        self._mapping: _Mapping | None = None
        self._functions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._load()

    # Loading and validation ---------------------------------------------------------------
    def _load(self) -> None:
        try:
            self._load_or_raise()
        except (OSError, ValueError, _ElfError, struct.error) as exc:
            self.reason = str(exc) or type(exc).__name__
            self._mapping = None

    def _load_or_raise(self) -> None:
        if not sys.platform.startswith("linux"):
            raise _ElfError(f"needs Linux /proc/self/maps and ELF, not {sys.platform}")
        if self.path is None:
            raise _ElfError("cryptography's _rust module has no file")
        if not os.path.isfile(self.path):
            raise _ElfError(f"{self.path} not found")
        wanted = set(_SIGNATURES) | set(_PROBES) | {f"_cffi_d_{p}" for p in _PROBES}
        symbols = _read_elf_symbols(self.path, wanted)
        self._values, self._ambiguous = symbols.values, symbols.ambiguous
        mappings = _find_mappings(self.path)
        if not mappings:
            raise _ElfError(f"{self.path} is not mapped into this process")
        problems: list[str] = []
        for mapping in mappings:
            mapping.bias -= symbols.first_load_delta
            problem = self._validate(mapping)
            if problem is None:
                self._mapping = mapping
                return
            problems.append(problem)
        raise _ElfError("; ".join(problems))

    def _validate(self, mapping: _Mapping) -> str | None:
        """None if cffi's own addresses agree with ``mapping``, else what disagreed."""
        cffi_lib = original_lib()
        matched = 0
        for name in _PROBES:
            try:
                addr = int(ffi.cast("uintptr_t", ffi.addressof(cffi_lib, name)))
            except (AttributeError, TypeError, ffi.error):
                continue
            expected = {
                mapping.bias + self._values[sym]
                for sym in (f"_cffi_d_{name}", name)
                if sym in self._values
            }
            if not expected:
                continue
            if addr not in expected:
                return (
                    f"load address check failed: cffi has {name} at {addr:#x}, the symbol "
                    f"table says {', '.join(f'{e:#x}' for e in sorted(expected))}"
                )
            matched += 1
        if matched < _MIN_PROBES:
            return f"only {matched} of {len(_PROBES)} validation symbols could be checked"
        return None

    # Lookup -------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """Whether the load bias was found and validated."""
        return self._mapping is not None

    def why_missing(self, name: str) -> str | None:
        """None if ``name`` resolves, else the reason it does not."""
        if self._mapping is None:
            return self.reason
        if name in self._ambiguous:
            return f"{name} is defined more than once in the symbol table"
        if name not in self._values:
            return f"{name} is not in the symbol table of {self.path}"
        addr = self._mapping.bias + self._values[name]
        if not any(lo <= addr < hi for lo, hi in self._mapping.exec_ranges):
            return f"{name} does not resolve into executable code"
        return None

    def function(self, name: str) -> Any:
        """The cffi function pointer for ``name``, resolved once; raises if unavailable."""
        fn = self._functions.get(name)
        if fn is not None:
            return fn
        with self._lock:
            fn = self._functions.get(name)
            if fn is None:
                problem = self.why_missing(name)
                if problem is not None or self._mapping is None:
                    raise TLSFeatureUnavailable(
                        f"OpenSSL function {name} is unavailable: {problem}",
                        code="ERR_TLS_FEATURE_UNAVAILABLE",
                        reason=problem,
                    )
                addr = self._mapping.bias + self._values[name]
                fn = ffi.cast(_SIGNATURES[name], addr)
                self._functions[name] = fn
        return fn


_resolver: _Resolver | None = None
_resolver_lock = threading.Lock()


def _get_resolver() -> _Resolver:
    """The process-wide resolver, built on first use."""
    global _resolver
    resolver = _resolver
    if resolver is None:
        with _resolver_lock:
            resolver = _resolver
            if resolver is None:
                resolver = _resolver = _Resolver(_library_path())
    return resolver


def _fn(name: str) -> Any:
    return _get_resolver().function(name)


# --- Availability --------------------------------------------------------------------------
def available() -> bool:
    """Whether extended OpenSSL access works in this process at all."""
    return _get_resolver().available


def unavailable_reason() -> str | None:
    """Why extended access is unavailable, or None when it is available."""
    resolver = _get_resolver()
    return None if resolver.available else resolver.reason


def _feature_problem(feature: str) -> str | None:
    resolver = _get_resolver()
    for name in _FEATURES[feature]:
        problem = resolver.why_missing(name)
        if problem is not None:
            return problem
    return None


_features_cache: tuple[_Resolver, dict[str, bool]] | None = None


def _feature_map() -> dict[str, bool]:
    """:func:`features`, computed once per resolver (getters ask on every handshake)."""
    global _features_cache
    resolver = _get_resolver()
    cache = _features_cache
    if cache is None or cache[0] is not resolver:
        cache = _features_cache = (
            resolver,
            {feature: _feature_problem(feature) is None for feature in _FEATURES},
        )
    return cache[1]


def features() -> dict[str, bool]:
    """Each extended feature mapped to whether every OpenSSL function it needs resolved."""
    return dict(_feature_map())


def has(feature: str) -> bool:
    """Whether ``feature`` is available (without building a dict)."""
    return _feature_map()[feature]


def require(feature: str, option: str) -> None:
    """Raise :class:`TLSFeatureUnavailable` naming ``option`` unless ``feature`` works."""
    if feature not in _FEATURES:
        raise ValueError(f"unknown extended feature {feature!r}")
    problem = _feature_problem(feature)
    if problem is not None:
        raise TLSFeatureUnavailable(
            f"option {option!r} needs extended OpenSSL access ({feature}), which is "
            f"unavailable: {problem}",
            code="ERR_TLS_FEATURE_UNAVAILABLE",
            reason=problem,
        )


# --- Helpers -------------------------------------------------------------------------------
# Callback objects and buffers, kept alive as long as the SSL_CTX cdata they serve.
_keepalive: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_keepalive_strong: dict[int, dict[str, Any]] = {}


def _keep(ctx_ptr: Any, slot: str, *objects: Any) -> None:
    """Hold ``objects`` for as long as ``ctx_ptr`` lives (replacing the slot's old ones)."""
    try:
        _keepalive.setdefault(ctx_ptr, {})[slot] = objects
    except TypeError:  # not weak-referenceable: keep for the life of the process
        addr = int(ffi.cast("uintptr_t", ctx_ptr))
        _keepalive_strong.setdefault(addr, {})[slot] = objects


def _onerror(value: Any, what: str) -> Callable[[Any, Any, Any], Any]:
    """A cffi ``onerror`` that logs and answers OpenSSL's failure value."""

    def handler(exc_type: Any, exc: Any, tb: Any) -> Any:
        _log.debug("aiotls: %s callback failed", what, exc_info=(exc_type, exc, tb))
        return value

    return handler


def _wire(protocols: Sequence[bytes], option: str) -> bytes:
    """Encode protocol names in the length-prefixed wire format (NPN and ALPN)."""
    if isinstance(protocols, (bytes, str)):
        raise TypeError(f"{option} must be a list of bytes, not {type(protocols).__name__}")
    out = bytearray()
    for proto in protocols:
        if not isinstance(proto, bytes):
            raise TypeError(f"{option} items must be bytes, not {type(proto).__name__}")
        if not 0 < len(proto) < 256:
            raise ValueError(f"{option} items must be 1 to 255 bytes long, got {proto!r}")
        out.append(len(proto))
        out += proto
    if not out:
        raise ValueError(f"{option} must not be empty")
    return bytes(out)


# --- ctrl ----------------------------------------------------------------------------------
def ctx_ctrl(ctx_ptr: Any, cmd: int, larg: int, parg: Any = None) -> int:
    """``SSL_CTX_ctrl(ctx, cmd, larg, parg)``; ``parg`` None means NULL."""
    return int(_fn("SSL_CTX_ctrl")(ctx_ptr, cmd, larg, ffi.NULL if parg is None else parg))


def ssl_ctrl(ssl_ptr: Any, cmd: int, larg: int, parg: Any = None) -> int:
    """``SSL_ctrl(ssl, cmd, larg, parg)``; ``parg`` None means NULL."""
    return int(_fn("SSL_ctrl")(ssl_ptr, cmd, larg, ffi.NULL if parg is None else parg))


def set_groups_list(ctx_ptr: Any, groups: str) -> None:
    """``SSL_CTX_set1_groups_list``: key-exchange groups in preference order.

    ``groups`` is OpenSSL's colon-separated list (e.g. ``"X25519MLKEM768:X25519:P-256"``).
    Raises ValueError with OpenSSL's reason when it refuses the list.
    """
    if not isinstance(groups, str):
        raise TypeError(f"groups must be a str, not {type(groups).__name__}")
    if not groups or "\0" in groups:
        raise ValueError(f"invalid groups list {groups!r}")
    buf = ffi.new("char[]", groups.encode("ascii", "strict"))
    _fn("SSL_CTX_ctrl")  # raise TLSFeatureUnavailable before touching the error queue
    lib.ERR_clear_error()
    if ctx_ctrl(ctx_ptr, SSL_CTRL_SET_GROUPS_LIST, 0, buf) != 1:
        # OpenSSL 4.0 queues no error for an unknown group name; say what it usually means.
        reasons = error_queue() or ["unknown or unsupported group name"]
        raise ValueError(f"OpenSSL rejected groups list {groups!r}: {'; '.join(reasons)}")


def set_ticket_keys(ctx_ptr: Any, keys: bytes) -> None:
    """Install 80 bytes of session ticket keys (name, HMAC secret, AES key) on a context.

    Contexts sharing the keys can resume each other's ticket sessions (TLS 1.2 and 1.3).
    """
    if not isinstance(keys, (bytes, bytearray, memoryview)):
        raise TypeError(f"ticket keys must be bytes, not {type(keys).__name__}")
    data = bytes(keys)
    if len(data) != TICKET_KEYS_LENGTH:
        raise ValueError(f"ticket keys must be {TICKET_KEYS_LENGTH} bytes, got {len(data)}")
    buf = ffi.new("unsigned char[]", data)
    lib.ERR_clear_error()
    if ctx_ctrl(ctx_ptr, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, len(data), buf) != 1:
        reasons = error_queue() or ["unknown error"]
        raise ValueError(f"OpenSSL refused the ticket keys: {'; '.join(reasons)}")


def get_ticket_keys(ctx_ptr: Any) -> bytes:
    """The context's 80 bytes of session ticket keys."""
    buf = ffi.new("unsigned char[]", TICKET_KEYS_LENGTH)
    lib.ERR_clear_error()
    if ctx_ctrl(ctx_ptr, SSL_CTRL_GET_TLSEXT_TICKET_KEYS, TICKET_KEYS_LENGTH, buf) != 1:
        reasons = error_queue() or ["unknown error"]
        raise ValueError(f"OpenSSL could not return the ticket keys: {'; '.join(reasons)}")
    return bytes(ffi.buffer(buf, TICKET_KEYS_LENGTH))


def set_max_send_fragment(ssl_ptr: Any, size: int) -> bool:
    """Cap the plaintext per TLS record this connection sends; False if out of 512..16384."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"max send fragment must be an int, not {type(size).__name__}")
    if not 0 <= size <= 2**31 - 1:
        return False
    ok = ssl_ctrl(ssl_ptr, SSL_CTRL_SET_MAX_SEND_FRAGMENT, size) == 1
    if not ok:
        lib.ERR_clear_error()
    return ok


def peer_tmp_key_info(ssl_ptr: Any) -> tuple[str, int] | None:
    """The peer's ephemeral key-exchange key as (OpenSSL type name, bits).

    E.g. ``("X25519", 253)``, ``("EC", 256)``, ``("DH", 2048)``. None before the key
    exchange, when the peer sent none, or for KEM groups (such as X25519MLKEM768), where
    the server answers a ciphertext rather than a key.
    """
    type_name = _fn("EVP_PKEY_get0_type_name")
    out = ffi.new("EVP_PKEY **")
    if ssl_ctrl(ssl_ptr, SSL_CTRL_GET_PEER_TMP_KEY, 0, out) <= 0 or out[0] == ffi.NULL:
        lib.ERR_clear_error()
        return None
    pkey = out[0]
    try:
        name = type_name(pkey)
        return (
            ffi.string(name).decode() if name != ffi.NULL else "unknown",
            int(lib.EVP_PKEY_bits(pkey)),
        )
    finally:
        lib.EVP_PKEY_free(pkey)  # SSL_CTRL_GET_PEER_TMP_KEY up-refs it for us


def cipher_standard_name(ssl_ptr: Any) -> str | None:
    """The RFC name of the current cipher (``TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256``)."""
    standard_name = _fn("SSL_CIPHER_standard_name")
    cipher = lib.SSL_get_current_cipher(ssl_ptr)
    if cipher == ffi.NULL:
        return None
    name = standard_name(cipher)
    return None if name == ffi.NULL else str(ffi.string(name).decode())


def add_chain_cert(ctx_ptr: Any, x509_ptr: Any) -> None:
    """``SSL_CTX_add1_chain_cert``: append to the chain of the context's current certificate.

    Call after ``use_certificate`` for that certificate: each certificate (RSA, ECDSA, ...)
    keeps its own chain, unlike ``add_extra_chain_cert``, which is shared. OpenSSL takes
    its own reference (larg=1, "add1"); the caller's X509 stays the caller's.
    """
    lib.ERR_clear_error()
    if ctx_ctrl(ctx_ptr, SSL_CTRL_CHAIN_CERT, 1, x509_ptr) != 1:
        reasons = error_queue() or ["unknown error"]
        raise ValueError(f"OpenSSL could not add the chain certificate: {'; '.join(reasons)}")


# --- NPN -----------------------------------------------------------------------------------
def set_npn_advertised(ctx_ptr: Any, protocols: Sequence[bytes]) -> None:
    """Servers on this context advertise ``protocols`` (in order) via NPN (TLS <= 1.2)."""
    setter = _fn("SSL_CTX_set_next_protos_advertised_cb")
    wire = _wire(protocols, "npn_protocols")
    buf = ffi.new("unsigned char[]", wire)
    length = len(wire)

    def advertise(ssl: Any, out: Any, outlen: Any, arg: Any) -> int:
        out[0] = buf
        outlen[0] = length
        return _SSL_TLSEXT_ERR_OK

    cb = ffi.callback(
        _NPN_ADVERTISED_CB, advertise, onerror=_onerror(_SSL_TLSEXT_ERR_NOACK, "NPN advertise")
    )
    _keep(ctx_ptr, "npn_advertised", cb, buf)
    setter(ctx_ptr, cb, ffi.NULL)


def set_npn_select(ctx_ptr: Any, protocols: Sequence[bytes]) -> None:
    """Clients on this context choose an NPN protocol with OpenSSL's SSL_select_next_proto.

    That picks the first protocol in the *server's* advertised list that ``protocols``
    also holds; with no overlap it picks the client's first protocol (as Node did).
    Read the outcome with :func:`npn_negotiated`.
    """
    setter = _fn("SSL_CTX_set_next_proto_select_cb")
    select_next_proto = _fn("SSL_select_next_proto")
    wire = _wire(protocols, "npn_protocols")
    buf = ffi.new("unsigned char[]", wire)
    length = len(wire)

    def select(ssl: Any, out: Any, outlen: Any, server: Any, server_len: int, arg: Any) -> int:
        status = select_next_proto(out, outlen, server, server_len, buf, length)
        if status not in (_OPENSSL_NPN_NEGOTIATED, _OPENSSL_NPN_NO_OVERLAP) or out[0] == ffi.NULL:
            return _SSL_TLSEXT_ERR_ALERT_FATAL
        return _SSL_TLSEXT_ERR_OK

    cb = ffi.callback(
        _NPN_SELECT_CB, select, onerror=_onerror(_SSL_TLSEXT_ERR_ALERT_FATAL, "NPN select")
    )
    _keep(ctx_ptr, "npn_select", cb, buf)
    setter(ctx_ptr, cb, ffi.NULL)


def npn_negotiated(ssl_ptr: Any) -> bytes | None:
    """The protocol NPN settled on for this connection, or None."""
    get = _fn("SSL_get0_next_proto_negotiated")
    data = ffi.new("const unsigned char **")
    length = ffi.new("unsigned int *")
    get(ssl_ptr, data, length)
    if data[0] == ffi.NULL or length[0] == 0:
        return None
    return bytes(ffi.buffer(data[0], length[0]))


# --- Sessions ------------------------------------------------------------------------------
def set_new_session_cb(ctx_ptr: Any, callback: Callable[[Any, Any], object]) -> None:
    """Call ``callback(ssl_ptr, session_ptr)`` for each new session on this context.

    OpenSSL calls it only when the context's session cache mode covers the side
    (SSL_SESS_CACHE_SERVER, the default, for servers; SSL_SESS_CACHE_CLIENT for clients);
    in TLS 1.3 it runs once per ticket, after the handshake. ``session_ptr`` is valid only
    during the call. The C callback returns 0, so OpenSSL keeps ownership.
    """
    setter = _fn("SSL_CTX_sess_set_new_cb")

    def new_session(ssl: Any, session: Any) -> int:
        try:
            callback(ssl, session)
        except Exception:
            _log.debug("aiotls: new-session callback failed", exc_info=True)
        return 0

    cb = ffi.callback(_NEW_SESSION_CB, new_session, onerror=_onerror(0, "new-session"))
    _keep(ctx_ptr, "new_session", cb)
    setter(ctx_ptr, cb)


def set_get_session_cb(ctx_ptr: Any, callback: Callable[[Any, bytes], bytes | None]) -> None:
    """Resume session-id sessions from an external store: ``callback(ssl_ptr, id) -> DER``.

    Servers call it (TLS <= 1.2, no ticket) when a client offers a session id the internal
    cache lacks. The DER (from :func:`session_der`) is parsed with d2i_SSL_SESSION and
    handed over with ``*copy = 0``: OpenSSL owns that one reference. OpenSSL still checks
    the session's version, session id context and lifetime; None (or an exception, or
    bad DER) means a full handshake.
    """
    setter = _fn("SSL_CTX_sess_set_get_cb")

    def get_session(ssl: Any, data: Any, length: int, copy: Any) -> Any:
        try:
            der = callback(ssl, bytes(ffi.buffer(data, length)))
        except Exception:
            _log.debug("aiotls: get-session callback failed", exc_info=True)
            return ffi.NULL
        if not der:
            return ffi.NULL
        der = bytes(der)
        buf = ffi.new("unsigned char[]", der)
        pp = ffi.new("unsigned char **", buf)
        session = lib.d2i_SSL_SESSION(ffi.NULL, pp, len(der))
        if session == ffi.NULL:
            lib.ERR_clear_error()
            return ffi.NULL
        copy[0] = 0  # our reference becomes OpenSSL's; no extra up-ref
        return session

    cb = ffi.callback(_GET_SESSION_CB, get_session, onerror=_onerror(ffi.NULL, "get-session"))
    _keep(ctx_ptr, "get_session", cb)
    setter(ctx_ptr, cb)


def set_client_hello_cb(ctx_ptr: Any, callback: Callable[[Any], int | tuple[int, int]]) -> None:
    """Call ``callback(ssl_ptr)`` early in each ClientHello a server on this context reads.

    It returns 1 to go on, 0 to fail the handshake (handshake_failure alert), or -1 to
    suspend (SSL_ERROR_WANT_CLIENT_HELLO_CB, which pyOpenSSL does not name); ``(0, alert)``
    fails it with that alert (OpenSSL's ``*al``). An exception or any other value fails
    the handshake with an internal_error alert.
    """
    setter = _fn("SSL_CTX_set_client_hello_cb")

    def client_hello(ssl: Any, alert: Any, arg: Any) -> int:
        try:
            result: object = callback(ssl)
        except Exception:
            _log.debug("aiotls: client-hello callback failed", exc_info=True)
            result = None
        if isinstance(result, tuple):
            result, alert[0] = result
        if type(result) is int and result in (
            _SSL_CLIENT_HELLO_SUCCESS,
            _SSL_CLIENT_HELLO_ERROR,
            _SSL_CLIENT_HELLO_RETRY,
        ):
            return result
        alert[0] = _SSL_AD_INTERNAL_ERROR
        return _SSL_CLIENT_HELLO_ERROR

    cb = ffi.callback(
        _CLIENT_HELLO_CB,
        client_hello,
        onerror=_onerror(_SSL_CLIENT_HELLO_ERROR, "client-hello"),
    )
    _keep(ctx_ptr, "client_hello", cb)
    setter(ctx_ptr, cb, ffi.NULL)


def client_hello_session_id(ssl_ptr: Any) -> bytes:
    """The legacy session id of the ClientHello (only inside the client-hello callback)."""
    get = _fn("SSL_client_hello_get0_session_id")
    out = ffi.new("const unsigned char **")
    length = int(get(ssl_ptr, out))
    if out[0] == ffi.NULL or length == 0:
        return b""
    return bytes(ffi.buffer(out[0], length))


def client_hello_ext(ssl_ptr: Any, ext_type: int) -> bytes | None:
    """The body of ClientHello extension ``ext_type``, None when the client sent none
    (only inside the client-hello callback)."""
    get = _fn("SSL_client_hello_get0_ext")
    out = ffi.new("const unsigned char **")
    length = ffi.new("size_t *")
    if get(ssl_ptr, ext_type, out, length) != 1:
        return None
    return bytes(ffi.buffer(out[0], length[0])) if length[0] else b""


def session_id(session_ptr: Any) -> bytes:
    """``SSL_SESSION_get_id``: the session's id (empty for a TLS 1.3 session until sent)."""
    get = _fn("SSL_SESSION_get_id")
    length = ffi.new("unsigned int *")
    data = get(session_ptr, length)
    if data == ffi.NULL or length[0] == 0:
        return b""
    return bytes(ffi.buffer(data, length[0]))


def set_session_id(session_ptr: Any, sid: bytes) -> None:
    """``SSL_SESSION_set1_id``: give a session its id (1 to 32 bytes; OpenSSL copies it)."""
    set1_id = _fn("SSL_SESSION_set1_id")
    if set1_id(session_ptr, sid, len(sid)) != 1:
        lib.ERR_clear_error()
        raise ValueError(f"OpenSSL refused a {len(sid)}-byte session id")


def session_der(session_ptr: Any) -> bytes:
    """``i2d_SSL_SESSION``: the session as DER (cryptography's own binding; always works)."""
    size = int(lib.i2d_SSL_SESSION(session_ptr, ffi.NULL))
    if size <= 0:
        raise ValueError("OpenSSL could not serialise the session")
    buf = ffi.new("unsigned char[]", size)
    pp = ffi.new("unsigned char **", buf)
    written = int(lib.i2d_SSL_SESSION(session_ptr, pp))
    return bytes(ffi.buffer(buf, written))
