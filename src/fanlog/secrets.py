"""Redaction of secrets before a record leaves the caller's thread: by key and by value.

Kind normalizers call :func:`redact` (structures) and :func:`scrub_text` (strings), so a
secret never reaches the journal, the disk or a tracker. Two rules:

- **by key**: the value of a key that looks like it names a secret (``password``,
  ``api_key``, ``AccountKey``, ``--api-key``, ``("password", X)``, ...) is replaced whole;
- **by value**: secret-shaped text inside any string is replaced where it stands (URL
  credentials, ``Authorization`` headers, ``KEY=value`` assignments with a secret-looking
  key, ``--password X`` flags, and the token formats of well-known services).

Configure with :func:`allow_keys`, :func:`allow_values`, :func:`add_key_patterns`,
:func:`add_value_patterns` and :func:`set_enabled`, or turn it off for the process with
``FANLOG_REDACT=0``. See docs/bad-inputs.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***REDACTED***"
ENV_SWITCH = "FANLOG_REDACT"
"""0, false, no or off turn redaction off; read at import and by ``set_enabled(None)``."""

# ------------------------------------------------------------------ keys
# Matched against the key's words joined by '_' in lower case, with '_' at both ends:
# "AccountKey" -> "_account_key_", "--api-key" -> "_api_key_", "hf_token" -> "_hf_token_".
_SECRET_KEY = re.compile(
    r"password|passwd|passphrase|secret|credential|cookie|bearer|authorization|shared_?access"
    r"|(?:api|private|access|account|encryption|signing|master|ssh|deploy|storage)_?key"
    r"|connection_?string|token(?!s_|iz|is)"
    r"|_(?:pwd|auth|sas|sig|signature|dsn)_|_(?:pass|pw)_$"
)
# Keys that name no secret although they match: language-model tokenizer settings, and
# names of secrets rather than secrets (``secret_name``, ``password_file``, ``api_key_env``).
_HARMLESS_KEY = re.compile(
    r"^_(?:\w+_)?(?:pad|eos|bos|unk|mask|sep|cls|special|start|end)_tokens?_$"
    r"|_token_(?:ids?|type|type_ids|count|limit)_$"
    r"|_(?:name|names|file|path|env|var|len|length)_$"
    # settings about a secret-sounding thing, not the thing: sig_level, auth_method,
    # token_budget, image_token_index, secret_santa_epochs, password_min_length
    r"|_(?:index|budget|level|method|methods|mode|type|epochs|steps|size|count|dim|num|rate"
    r"|ratio|enabled|required|min_length|max_length)_$"
    r"|^_model_signature_$"
)
_ENV_KEY = re.compile(r"^(?:[A-Z][A-Z0-9]*_)+KEY$")
"""An environment variable named ``<SERVICE>_KEY`` (KAGGLE_KEY, OPENAI_KEY, S3_KEY)."""
_WORD_BREAK = re.compile(r"([a-z0-9])([A-Z])|([A-Z]+)([A-Z][a-z])")
_NON_WORD = re.compile(r"[^a-z0-9]+")
_EXTENSION = re.compile(r"^[A-Za-z]{1,4}$")

# Configuration (process-wide). `_enabled` is set from FANLOG_REDACT at the end of the module.
_enabled = True
_allowed: set[str] = set()
_allowed_values: set[str] = set()
_extra_keys: list[re.Pattern[str]] = []
_extra_values: list[re.Pattern[str]] = []
_key_cache: dict[str, bool] = {}
_KEY_CACHE_SIZE = 4096

# ------------------------------------------------------------------ values
# Secret shapes: (words that must occur in the lower-cased text, pattern, run on the
# lower-cased text). Each pattern has one group: the part replaced. The words keep a long
# text that holds none of them from being scanned; literal-first patterns keep scans fast.
_SHAPES: tuple[tuple[tuple[str, ...], re.Pattern[str], bool], ...] = tuple(
    (words, re.compile(pattern), lowered)
    for words, pattern, lowered in (
        # URL credentials: scheme://user:PASSWORD@host, and a token as the whole user part
        (("://",), r"://[^\s/?#@:]{0,256}:([^\s/?#]{1,256})@", False),
        (("://",), r"://([A-Za-z0-9_.~%-]{16,256})@", False),
        # HTTP authorization: "Authorization: Bearer X"; a Bearer or Basic credential alone
        (
            ("authorization",),
            r"authorization[\"']?[ \t]{0,8}[:=][ \t]{0,8}[\"']?((?:[a-z]{2,12}[ \t]+)?[^\s\"',;]{1,4096})",
            True,
        ),
        (
            ("bearer",),
            r"bearer(?<![a-z0-9]bearer)[ \t]+((?=[a-z0-9._~+/-]*[0-9._~+/-])[a-z0-9._~+/-]{8,4096}=*)",
            True,
        ),
        (
            ("basic",),
            r"Basic(?<![A-Za-z0-9]Basic)[ \t]+"
            r"((?=[A-Za-z0-9+/]*(?:[0-9+/]|[a-z][A-Z]))[A-Za-z0-9+/]{8,4096}={0,2})",
            False,
        ),
        # private keys in PEM form, to their END line or to the end of the text
        (
            ("private key-----",),
            r"(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----[\s\S]*?"
            r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z))",
            False,
        ),
        # token formats of well-known services
        (
            ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
            r"((?:gh[pousr]_|github_pat_)[A-Za-z0-9_]{30,255})",
            False,
        ),  # GitHub
        (("glpat-",), r"(glpat-[A-Za-z0-9_-]{20,255})", False),  # GitLab
        (
            ("akia", "asia", "abia", "acca"),
            r"((?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})(?![A-Za-z0-9])",
            False,
        ),  # AWS access key id
        (("eyj",), r"(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)", False),  # JWT
        (("xox",), r"(xox[abposr](?<![A-Za-z0-9]xox.)-[A-Za-z0-9-]{10,255})", False),  # Slack
        (("hooks.slack.com",), r"(hooks\.slack\.com/services/[A-Za-z0-9/_-]{10,255})", False),
        (
            ("sk-",),
            r"(sk-(?<![A-Za-z0-9]sk-)(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,255})",
            False,
        ),  # OpenAI, Anthropic
        (
            ("sk_live_", "sk_test_", "rk_live_", "rk_test_"),
            r"((?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,255})",
            False,
        ),  # Stripe
        (("hf_",), r"(hf_(?<![A-Za-z0-9]hf_)[A-Za-z0-9]{30,255})", False),  # Hugging Face
        (("aiza",), r"(AIza[A-Za-z0-9_-]{35})", False),  # Google API key
        (("dapi",), r"(dapi(?<![A-Za-z0-9]dapi)[0-9a-f]{32}(?:-[0-9]+)?)", False),  # Databricks
        (("npm_",), r"(npm_(?<![A-Za-z0-9]npm_)[A-Za-z0-9]{36})", False),  # npm
        (("pypi-",), r"(pypi-(?<![A-Za-z0-9]pypi-)[A-Za-z0-9_-]{50,})", False),  # PyPI
        # a .netrc entry: machine HOST login USER password X
        (("machine",), r"(?<![a-z0-9_])(?:password|passwd)[ \t\r\n]+([^\s]{1,4096})", True),
        # prose: "the password is X", "api key was X", "token is: X"
        (
            ("password", "passphrase", "api key", "secret", "token"),
            r"(?:password|passphrase|api key|secret key|secret|token)[ \t]+(?:is|was)[ \t]*:?[ \t]+"
            r"[\"'`]?([^\s\"'`]{4,4096})",
            True,
        ),
        # an API key as a URL query parameter: ...?key=X
        (("key=",), r"[?&](?:key|apikey|api-key)=([^&#\s\"']{1,4096})", True),
        # mysql -pX (the password glued to the flag), curl -u user:X
        (("mysql",), r"mysql(?:dump|admin)?\b[^\n]{0,200}?[ \t]-p([^\s]{1,4096})", False),
        (
            ("curl",),
            r"curl\b[^\n]{0,200}?[ \t](?:-u|--user)[ \t=]+[\"']?[^\s:\"']{1,256}:"
            r"([^\s\"']{1,4096})",
            False,
        ),
    )
)
_HEX_KEY_WORDS = ("wandb", "api", "key", "token", "secret", "passw", "login", "auth", "credential")
"""A W&B API key is 40 hex digits, like a git commit: redacted only right after one of these."""
_HEX_KEY = re.compile(r"[^\n]{0,24}?(?<![0-9a-z])((?:local-)?[0-9a-f]{40})(?![0-9a-z])")

# Parts of every secret-looking key (see _SECRET_KEY): where KEY=value and --flag value are
# looked for in text.
_KEY_STEMS = (
    "pass",
    "pw",
    "secret",
    "token",
    "key",
    "auth",
    "cred",
    "cookie",
    "bearer",
    "sas",
    "sig",
    "dsn",
    "connection",
    "access",
)
_KEY_CHAR = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_KEY_TAIL = re.compile(r"[A-Za-z0-9_.-]{0,64}")
_ASSIGN = re.compile(r"[\"']?[ \t]{0,8}(?:=|:(?!//))[ \t]{0,8}([\"']?)")
_FLAG_GAP = re.compile(r"[ \t]+(?=[^\s-])")
_PLAIN_VALUE = re.compile(r"[^\s\"'&;,]+")
_WORD_VALUE = re.compile(r"\"[^\"\n]*\"|'[^'\n]*'|[^\s\"']+")
_QUOTED_VALUE = {
    '"': re.compile(r'(?:[^"\\\n]|\\.){1,4096}'),  # to the closing quote,
    "'": re.compile(r"(?:[^'\\\n]|\\.){1,4096}"),
}  # over escaped ones
_WORDS = frozenset(
    {word for words, _, _ in _SHAPES for word in words} | set(_HEX_KEY_WORDS) | set(_KEY_STEMS)
)
"""Every word some rule above needs; a text without one of them holds no built-in secret."""
_ANY_WORD = re.compile("|".join(re.escape(word) for word in sorted(_WORDS, key=len, reverse=True)))
_SHAPES_OF = {word: tuple(i for i, (words, _, _) in enumerate(_SHAPES) if word in words) for word in _WORDS}
"""Word -> indices of the shapes it gates."""
_SHORT = 256
"""Up to this length one regex tells whether any word is present (most texts: none)."""
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


# ------------------------------------------------------------------ configuration
def allow_keys(keys: Iterable[str]) -> None:
    """Let these exact keys (or last key components) through unredacted (process-wide)."""
    _allowed.update(keys)
    _key_cache.clear()


def allow_values(values: Iterable[str]) -> None:
    """Never redact these exact strings, whatever they look like (process-wide)."""
    _allowed_values.update(values)


def add_key_patterns(*patterns: str | re.Pattern[str]) -> None:
    """Also treat keys as secret when one of these regular expressions is found in them
    (case-insensitive, searched in the key's last component)."""
    _extra_keys.extend(re.compile(p, re.IGNORECASE) if isinstance(p, str) else p for p in patterns)
    _key_cache.clear()


def add_value_patterns(*patterns: str | re.Pattern[str]) -> None:
    """Also replace text matching these regular expressions (group 1 if the pattern has
    groups, else the whole match) in every string that is redacted."""
    _extra_values.extend(re.compile(p) if isinstance(p, str) else p for p in patterns)


def set_enabled(enabled: bool | None) -> None:
    """Turn redaction on or off for the process; None: as ``FANLOG_REDACT`` says (default on)."""
    global _enabled
    if enabled is None:
        enabled = os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")
    _enabled = enabled
    _key_cache.clear()


def is_enabled() -> bool:
    return _enabled


def reset() -> None:
    """Back to the defaults: no extra patterns, empty allow-lists, on unless ``FANLOG_REDACT=0``."""
    for registry in (_allowed, _allowed_values, _extra_keys, _extra_values):
        registry.clear()
    set_enabled(None)


# ------------------------------------------------------------------ keys
def is_secret_key(key: str) -> bool:
    """True if `key` looks like it names a secret (by its last component; see the module doc)."""
    if not _enabled:
        return False
    known = _key_cache.get(key)
    if known is None:
        if len(_key_cache) >= _KEY_CACHE_SIZE:
            _key_cache.clear()
        known = _key_cache[key] = _judge_key(key)
    return known


def _judge_key(key: str) -> bool:
    if key in _allowed:
        return False
    component = key.rsplit("/", 1)[-1]
    stem, _, last = component.rpartition(".")
    names = [last or component]
    if stem and _EXTENSION.match(last):  # "password.txt": judge the name, not the extension
        names.append(stem)
    return any(_secret_name(name) for name in names)


def _secret_name(name: str) -> bool:
    if name in _allowed:
        return False
    if any(p.search(name) for p in _extra_keys) or _ENV_KEY.match(name):
        return True
    words = "_" + _NON_WORD.sub("_", _WORD_BREAK.sub(r"\1\3_\2\4", name).lower()).strip("_") + "_"
    return bool(_SECRET_KEY.search(words)) and not _HARMLESS_KEY.search(words)


# ------------------------------------------------------------------ values
def scrub_text(text: str) -> str:
    """`text` with every secret-shaped part replaced by ``***REDACTED***``."""
    if not _enabled or not text or text in _allowed_values:
        return text
    lowered = text.lower()
    if len(lowered) != len(text):  # a few non-ASCII letters change length when lowered
        lowered = text.translate(_ASCII_LOWER)
    present = _words_in(lowered)
    if not present and not _extra_values:
        return text  # the common case, kept fast
    spans = sorted(span for span in _secret_spans(text, lowered, present) if span[1] > span[0])
    if not spans:
        return text
    pieces: list[str] = []
    done = 0
    for start, stop in spans:
        if start > done or not pieces:  # a new secret (overlapping ones are replaced once)
            pieces += [text[done:start], REDACTED]
        done = max(done, stop)
    pieces.append(text[done:])
    return "".join(pieces)


def _words_in(lowered: str) -> set[str]:
    """The words of _WORDS that occur in `lowered`."""
    if len(lowered) <= _SHORT and _ANY_WORD.search(lowered) is None:
        return set()
    return {word for word in _WORDS if word in lowered}


def _secret_spans(text: str, lowered: str, present: set[str]) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for pattern in _extra_values:
        spans.extend(m.span(1 if pattern.groups else 0) for m in pattern.finditer(text))
    if not present:
        return spans
    for index in sorted({i for word in present for i in _SHAPES_OF[word]}):
        _, pattern, on_lowered = _SHAPES[index]
        spans.extend(m.span(1) for m in pattern.finditer(lowered if on_lowered else text))
    for word in present.intersection(_HEX_KEY_WORDS):
        for end in _ends_of(lowered, word):
            match = _HEX_KEY.match(lowered, end)
            if match is not None:
                spans.append(match.span(1))
    stems = present.intersection(_KEY_STEMS)
    if stems and ("=" in text or ":" in text or "-" in text):
        spans.extend(_assigned_values(text, lowered, stems))
    return spans


def _ends_of(lowered: str, word: str) -> list[int]:
    """The index after each occurrence of `word` in `lowered`."""
    ends, start = [], lowered.find(word)
    while start != -1:
        ends.append(start + len(word))
        start = lowered.find(word, start + 1)
    return ends


def _assigned_values(text: str, lowered: str, stems: set[str]) -> list[tuple[int, int]]:
    """Spans of the values given to secret-looking keys: KEY=v, KEY: v, "KEY": "v", --KEY v."""
    spans, seen = [], set()
    for stem in stems:
        for end in _ends_of(lowered, stem):
            start = end - len(stem)
            while start > 0 and end - start < 64 and text[start - 1] in _KEY_CHAR:
                start -= 1
            end = _KEY_TAIL.match(text, end).end()  # type: ignore[union-attr]
            if (start, end) in seen:
                continue
            seen.add((start, end))
            value = _value_after(text, start, end)
            if value is not None and is_secret_key(text[start:end]):
                spans.append(value)
    return spans


def _value_after(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Where the value given to the key text[start:end] lies, if it is given one."""
    assign = _ASSIGN.match(text, end)
    if assign is not None:
        quote = assign.group(1)
        value = (_QUOTED_VALUE[quote] if quote else _PLAIN_VALUE).match(text, assign.end())
        return value.span() if value is not None else None
    if text.startswith("-", start):  # a command-line flag: --password X
        gap = _FLAG_GAP.match(text, end)
        if gap is not None:
            value = _WORD_VALUE.match(text, gap.end())
            return value.span() if value is not None else None
    return None


# ------------------------------------------------------------------ structures
_SCALARS = frozenset({int, float, bool, type(None), complex, bytes})
_CONTAINERS = (Mapping, list, tuple, set, frozenset)


class CircularReferenceError(ValueError):
    """A structure that contains itself: it has no JSON form."""

    def __init__(self) -> None:
        super().__init__()
        self.where = ""
        """The path from the top of the structure to where it contains itself."""

    def __str__(self) -> str:
        return f"it contains itself at {self.where or 'the top level'}"


def redact(value: Any) -> Any:
    """A copy of `value` with secrets replaced, at any depth.

    Mappings lose the values of secret-looking keys; lists lose the value after a
    secret-looking flag (``["--api-key", X]``), and tuples the second item of a
    secret-looking pair (``("password", X)``); every string is passed through
    :func:`scrub_text`. Tuples and sets become lists, keys become str. Raises
    CircularReferenceError for a structure that contains itself.
    """
    if not is_enabled():
        return value
    return _redact(value, set())


def _redact(value: Any, inside: set[int]) -> Any:
    cls = type(value)
    if cls is str:
        return scrub_text(value)
    if cls in _SCALARS:
        return value
    if isinstance(value, str):
        return scrub_text(value)
    if cls is not dict and cls is not list and not isinstance(value, _CONTAINERS):
        return value
    if id(value) in inside:
        raise CircularReferenceError()
    inside.add(id(value))
    result: dict[str, Any] | list[Any]
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            name = str(key)
            try:
                secret = is_secret_key(name) and not _no_secret(item)
                result[name] = REDACTED if secret else _redact(item, inside)
            except CircularReferenceError as exc:
                exc.where = f"[{key!r}]{exc.where}"
                raise
    else:
        result = _redact_sequence(value, inside)
    inside.discard(id(value))
    return result


def _redact_sequence(value: Any, inside: set[int]) -> list[Any]:
    items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
    out = []
    for index, item in enumerate(items):
        try:
            out.append(_redact(item, inside))
        except CircularReferenceError as exc:
            exc.where = f"[{index}]{exc.where}"
            raise
    if 2 <= len(out) <= 3 and isinstance(out[0], str) and is_secret_key(out[0]):
        if len(out) == 2 and not _no_secret(out[1]):
            out[1] = REDACTED  # ("password", X), ["AWS_SECRET_ACCESS_KEY", X] (JSON, YAML pairs)
            return out
        if len(out) == 3 and out[1] in ("=", ":"):
            out[2] = REDACTED  # ("password", "=", X)
            return out
    for index in range(len(out) - 1):
        flag = out[index]
        if isinstance(flag, str) and flag.startswith("-") and "=" not in flag and is_secret_key(flag):
            out[index + 1] = REDACTED  # ["--api-key", X]
    return out


def _no_secret(value: Any) -> bool:
    """Values that cannot be a secret whatever their key says (``use_auth_token: False``)."""
    return value is None or isinstance(value, bool)


def redact_options(options: dict[str, Any]) -> dict[str, Any]:
    """The keyword options of a `log()` call, redacted (they reach the journal and trackers)."""
    if _enabled:
        for key, value in options.items():
            if type(value) not in _SCALARS or is_secret_key(key):
                return _redact(options, set())
    return options


set_enabled(None)
