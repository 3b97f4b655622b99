"""Cipher names: Node's get_ciphers(), DEFAULT_CIPHERS and IANA standard names."""

from __future__ import annotations

from functools import cache

from ._openssl.context import cipher_names

__all__ = ["DEFAULT_CIPHERS", "get_ciphers", "standard_name"]

#: TLS 1.2 suites offered by default: forward-secret AEAD only (Mozilla "intermediate").
#: DHE suites take effect only on servers given ``dhparam``. TLS 1.3 suites are
#: OpenSSL's defaults (see the ``ciphersuites`` option).
DEFAULT_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)

_KX = {"ECDHE-ECDSA": "ECDHE_ECDSA", "ECDHE-RSA": "ECDHE_RSA", "DHE-RSA": "DHE_RSA"}
_ENC = {
    "AES128-GCM": "AES_128_GCM",
    "AES256-GCM": "AES_256_GCM",
    "AES128": "AES_128_CBC",
    "AES256": "AES_256_CBC",
    "CHACHA20-POLY1305": "CHACHA20_POLY1305",
}


@cache
def get_ciphers() -> list[str]:
    """Names of the ciphers this OpenSSL supports, lower case, as Node's tls.getCiphers()."""
    return sorted({name.lower() for name in cipher_names()})


def standard_name(name: str) -> str:
    """IANA name of an OpenSSL suite name (TLS 1.3 names are already standard)."""
    if name.startswith("TLS_"):
        return name
    prefix = next((p for p in _KX if name.startswith(p + "-")), None)
    kx, rest = ("RSA", name) if prefix is None else (_KX[prefix], name[len(prefix) + 1 :])
    for enc_name, enc in _ENC.items():
        if rest == enc_name or rest.startswith(enc_name + "-"):
            mac = rest[len(enc_name) + 1 :] or "SHA256"
            return f"TLS_{kx}_WITH_{enc}_{'SHA' if mac == 'SHA' else mac}"
    return name
