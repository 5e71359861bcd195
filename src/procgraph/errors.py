"""The exception hierarchy: every error procgraph raises on purpose is a ProcgraphError.

Messages say what went wrong and how to fix it. ``BrokerUnavailable`` is the one transient
error: the broker cannot be reached right now, and trying again later may succeed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ProcgraphError(Exception):
    """Root of all procgraph errors; the message says what went wrong and how to fix it."""


class GraphError(ProcgraphError):
    """A process graph is malformed; the message names the file, the line and the fix."""


class CodecError(ProcgraphError):
    """A stream entry cannot be decoded into the expected message type."""


class MessageTooLarge(ProcgraphError):
    """A message is larger than its output port or the broker accepts; it is not sent.

    Raised by ``send`` (a source sees it at once; a handler's input is retried, then
    dead-lettered). Not transient: sending the same message again cannot succeed.
    """


class BrokerError(ProcgraphError):
    """A broker cannot be started or reached."""


class BrokerRefused(BrokerError):
    """The broker answered but refuses this client for good: a wrong password or user, or a
    TLS certificate that is not trusted. Not transient (retrying cannot help); the message
    names the broker, its URL with the password masked, and the fix."""


class BrokerUnavailable(BrokerError, ConnectionError):
    """The broker cannot be reached right now (connection refused, reset or timed out).

    Transient: the same call may succeed once the broker is back. The public facades
    (agent state, model registry, health) raise it instead of the Redis client's own errors,
    so agent code needs no Redis imports to tell "retry later" from a real failure.
    """


class StateError(ProcgraphError):
    """Agent state cannot be read or written as asked (e.g. a value that is not JSON)."""


class ModelRegistryError(ProcgraphError):
    """A model registry operation cannot be done; the message says why and what to do."""


class ModelIntegrityError(ModelRegistryError):
    """The stored bytes of a model version do not match their recorded sha256."""


class RecordingError(ProcgraphError):
    """A recording file cannot be written or read back."""


class DeployError(ProcgraphError):
    """A deployment cannot be generated from the graph as written."""


class MissingDependencyError(ProcgraphError):
    """An optional dependency is not installed; the message names the pip command."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency, or raise a MissingDependencyError naming the fix."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{module} is not installed: run  pip install 'procgraph[{extra}]'"
        raise MissingDependencyError(msg) from exc


def _transient_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


#: the exceptions that mean "the broker is unreachable right now" (BrokerUnavailable included)
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = _transient_errors()


#: what to do about each reason :func:`refusal` gives
#: the start of the reason of a refusal by the broker's ACL (the NOPERM text follows)
NOT_PERMITTED = "not allowed by the broker's ACL"
_FIXES = {
    NOT_PERMITTED: "grant the user the commands, keys and channels a line needs (docs/ops.md, "
    "Security: ACLs), or connect as another user",
    "wrong password or user": "give the broker's password (and user) in the URL, as "
    "USER:PASSWORD@ before the host (best in $PROCGRAPH_REDIS: every user can read a --redis "
    "in ps), or in the graph (brokers: NAME: {password: ${VAR}, username: ...})",
    "no password given and the broker requires one": "give the broker's password in the URL, "
    "as :PASSWORD@ before the host (best in $PROCGRAPH_REDIS), or in the graph "
    "(brokers: NAME: {password: ${VAR}})",
    "TLS certificate not trusted": "give the CA that signed the broker's certificate in the "
    "graph (brokers: NAME: {tls: {ca: ca.pem}}) and connect by the name in the certificate",
    "TLS handshake failed": "check that the port speaks TLS (rediss://) and that the broker "
    "accepts this client: give tls.cert and tls.key when it asks for a client certificate",
}


#: OpenSSL reasons that a retry cannot change (a plain-text port, a missing or unknown
#: client certificate, no common protocol)
_TLS_REFUSED = ("WRONG_VERSION_NUMBER", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE",
                "HANDSHAKE_FAILURE", "NO_CERTIFICATE", "UNSUPPORTED_PROTOCOL", "record layer "
                "failure", "PEM lib")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen or len(seen) > 8:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def refusal(exc: BaseException) -> str | None:
    """Why the broker refuses this client for good, or None when ``exc`` may be transient.

    redis-py raises AuthenticationError (a ConnectionError) for WRONGPASS/NOAUTH,
    AuthenticationWrongNumberOfArgsError (a ResponseError), and wraps TLS errors in a plain
    ConnectionError; the TLS error is found in the exception's cause/context chain or text.
    """
    import ssl

    from redis.exceptions import (
        AuthenticationError,
        AuthenticationWrongNumberOfArgsError,
        NoPermissionError,
        ResponseError,
    )

    for item in _chain(exc):
        text = str(item)
        if isinstance(item, NoPermissionError) or (
                isinstance(item, ResponseError) and text.startswith("NOPERM")):
            from procgraph.safetext import printable

            return f"{NOT_PERMITTED} ({printable(text, 160)})"
        if isinstance(item, AuthenticationError | AuthenticationWrongNumberOfArgsError) or (
                isinstance(item, ResponseError) and text.startswith(("NOAUTH", "WRONGPASS"))):
            if any(word in text for word in ("NOAUTH", "Authentication required",
                                             "already authenticated")):  # HELLO, RESP3
                return "no password given and the broker requires one"
            return "wrong password or user"
        if isinstance(item, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            return "TLS certificate not trusted"
        if any(word in text for word in _TLS_REFUSED):  # not SSLEOFError: a broker restart
            return "TLS handshake failed"
    return None


def refused(what: str, reason: str) -> BrokerRefused:
    """A BrokerRefused saying ``what`` (credentials masked), ``reason`` and its fix."""
    from procgraph.redact import redact

    fix = _FIXES.get(reason.split(" (")[0], "check the broker URL and options")
    return BrokerRefused(f"{redact(what)}: the broker refused this client: {reason}; fix: {fix}")


@contextmanager
def broker_unavailable_as(what: str) -> Iterator[None]:
    """Turn the Redis client's connection errors inside the block into BrokerUnavailable,
    and a wrong password or an untrusted TLS certificate into BrokerRefused (not transient).

    Credentials in ``what`` and in the client's error text are masked.
    """
    from procgraph.redact import redact

    try:
        yield
    except BrokerUnavailable:
        raise
    except Exception as exc:
        reason = refusal(exc)
        if reason is not None:
            raise refused(what, reason) from exc
        if isinstance(exc, TRANSIENT_ERRORS):
            raise BrokerUnavailable(redact(f"{what}: broker unreachable ({exc})")) from exc
        raise
