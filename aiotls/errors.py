"""The TLSError family: every failure aiotls reports carries a Node-style ``.code``.

Codes follow Node.js: ``ERR_TLS_*`` for conditions Node names itself, OpenSSL's
X.509 verify names (``CERT_HAS_EXPIRED``, ...) for certificate problems, and
``ERR_SSL_<REASON>`` for errors raised by OpenSSL's TLS state machine.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TLSCertificateError",
    "TLSConfigError",
    "TLSError",
    "TLSFeatureUnavailable",
    "TLSHandshakeTimeout",
    "verify_code_name",
]


class TLSError(Exception):
    """Base class of aiotls errors; ``code`` is the Node-style code, ``reason`` OpenSSL's text."""

    def __init__(self, message: str, *, code: str = "ERR_TLS", reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason if reason is not None else message


class TLSConfigError(TLSError, ValueError):
    """Bad option value or key material that OpenSSL refused (also a ValueError)."""


class TLSFeatureUnavailable(TLSError, NotImplementedError):
    """A feature this OpenSSL build cannot provide (also a NotImplementedError)."""


class TLSHandshakeTimeout(TLSError, TimeoutError):
    """The handshake did not finish within ``handshake_timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            f"TLS handshake timed out after {timeout:g} s", code="ERR_TLS_HANDSHAKE_TIMEOUT"
        )


class TLSCertificateError(TLSError):
    """The peer's certificate failed verification or the hostname check.

    For hostname mismatches (code ``ERR_TLS_CERT_ALTNAME_INVALID``) ``host`` and
    ``cert`` hold the name checked and the peer certificate dict, as in Node.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        reason: str | None = None,
        host: str | None = None,
        cert: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, code=code, reason=reason)
        self.host = host
        self.cert = cert


# OpenSSL's X509_V_ERR_* numbers (include/openssl/x509_vfy.h); Node reports the name
# without its prefix, and so do we.
_VERIFY_NAMES = {
    1: "UNSPECIFIED",
    2: "UNABLE_TO_GET_ISSUER_CERT",
    3: "UNABLE_TO_GET_CRL",
    4: "UNABLE_TO_DECRYPT_CERT_SIGNATURE",
    5: "UNABLE_TO_DECRYPT_CRL_SIGNATURE",
    6: "UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY",
    7: "CERT_SIGNATURE_FAILURE",
    8: "CRL_SIGNATURE_FAILURE",
    9: "CERT_NOT_YET_VALID",
    10: "CERT_HAS_EXPIRED",
    11: "CRL_NOT_YET_VALID",
    12: "CRL_HAS_EXPIRED",
    13: "ERROR_IN_CERT_NOT_BEFORE_FIELD",
    14: "ERROR_IN_CERT_NOT_AFTER_FIELD",
    15: "ERROR_IN_CRL_LAST_UPDATE_FIELD",
    16: "ERROR_IN_CRL_NEXT_UPDATE_FIELD",
    17: "OUT_OF_MEM",
    18: "DEPTH_ZERO_SELF_SIGNED_CERT",
    19: "SELF_SIGNED_CERT_IN_CHAIN",
    20: "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
    21: "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
    22: "CERT_CHAIN_TOO_LONG",
    23: "CERT_REVOKED",
    24: "INVALID_CA",
    25: "PATH_LENGTH_EXCEEDED",
    26: "INVALID_PURPOSE",
    27: "CERT_UNTRUSTED",
    28: "CERT_REJECTED",
    29: "SUBJECT_ISSUER_MISMATCH",
    30: "AKID_SKID_MISMATCH",
    31: "AKID_ISSUER_SERIAL_MISMATCH",
    32: "KEYUSAGE_NO_CERTSIGN",
    33: "UNABLE_TO_GET_CRL_ISSUER",
    34: "UNHANDLED_CRITICAL_EXTENSION",
    35: "KEYUSAGE_NO_CRL_SIGN",
    36: "UNHANDLED_CRITICAL_CRL_EXTENSION",
    37: "INVALID_NON_CA",
    41: "INVALID_EXTENSION",
    42: "INVALID_POLICY_EXTENSION",
    43: "NO_EXPLICIT_POLICY",
    44: "DIFFERENT_CRL_SCOPE",
    47: "PERMITTED_VIOLATION",
    48: "EXCLUDED_VIOLATION",
    50: "APPLICATION_VERIFICATION",
    62: "HOSTNAME_MISMATCH",
    63: "EMAIL_MISMATCH",
    64: "IP_ADDRESS_MISMATCH",
    66: "INVALID_CALL",
    67: "STORE_LOOKUP",
    68: "NO_VALID_SCTS",
    69: "PROXY_SUBJECT_NAME_VIOLATION",
    70: "OCSP_VERIFY_NEEDED",
    71: "OCSP_VERIFY_FAILED",
    72: "OCSP_CERT_UNKNOWN",
    73: "UNSUPPORTED_SIGNATURE_ALGORITHM",
    74: "SIGNATURE_ALGORITHM_MISMATCH",
    75: "SIGNATURE_ALGORITHM_INCONSISTENCY",
    79: "EE_KEY_TOO_SMALL",
    80: "CA_KEY_TOO_SMALL",
    81: "CA_MD_TOO_WEAK",
}


def verify_code_name(code: int) -> str:
    """Node's name for an X509_V_ERR_* number (``X509_V_ERR_<n>`` when unknown)."""
    return _VERIFY_NAMES.get(code, f"X509_V_ERR_{code}")
