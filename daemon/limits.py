"""Every limit and default the daemon uses, with its unit in the name and its reason.

Configuration can override the ones a user has a reason to change; the rest are
fixed here so that a reader finds all the numbers in one place.
"""

DEFAULT_HOST = "127.0.0.1"  # loopback until the user chooses to expose it
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = "~/.simpletuner/cloud"  # where SimpleTuner keeps cloud state
DEFAULT_OUTPUTS_DIR = "~/.simpletuner/cloud_outputs"
DEFAULT_CLIENT_IP_HEADER = "X-Forwarded-For"

# Standard Webhooks and Replicate's verification docs both use +/- 5 minutes.
TIMESTAMP_TOLERANCE_S = 300
# A training snapshot carries its whole cumulative log; hours of tqdm lines stay far
# below this, and anything larger is more likely abuse than a real delivery.
MAX_BODY_BYTES = 32 * 1024 * 1024
BODY_READ_CHUNK_BYTES = 64 * 1024
# A real delivery arrives in well under a second; a body still trickling in after
# this long is a slow client or an attack holding a connection open.
BODY_READ_TIMEOUT_S = 30.0  # default of webhook.body_timeout_s
# Bodies buffered at once: bounds memory to this many times max_body_bytes however
# many connections are open. Replicate sends a handful of deliveries at a time.
MAX_BODIES_IN_FLIGHT = 32
BODY_SLOT_WAIT_S = 0.5
# Signature headers: several entries allow key rotation; dozens only serve an
# attacker trying many keys with one request.
MAX_SIGNATURE_ENTRIES = 16
# HMAC keys shorter than this are guessable; Standard Webhooks keys are 24-64 bytes
# (a published Svix example has 18).
MIN_SECRET_BYTES = 16

# Opaque identifiers: Replicate's ids are 26 characters and webhook ids are short;
# the caps only stop a hostile header from bloating logs and the database.
MAX_WEBHOOK_ID_CHARS = 256
MAX_JOB_ID_CHARS = 128
MAX_STATUS_CHARS = 32
# Unix seconds fit in 10 digits until 2286; 12 rejects absurd values early.
MAX_TIMESTAMP_DIGITS = 12

# Replicate wants an answer within a few seconds and the brief promises one: the
# lock wait plus the commit must fit well inside a second.
DB_BUSY_TIMEOUT_MS = 700
COMMIT_WAIT_S = 0.9
# When storage is unavailable Replicate retries the terminal delivery for about a
# minute, so a short hint keeps several retries inside that window.
RETRY_AFTER_S = 5
# Group commit: one transaction carries at most this many deliveries.
WRITE_BATCH_MAX = 256
# The WAL is checkpointed every 256 pages (1 MiB with 4 KiB pages) and cut back to
# 1 MiB after a checkpoint, so that it does not stay at SQLite's default 4 MB peak.
WAL_CHECKPOINT_PAGES = 256
WAL_KEEP_BYTES = 1024 * 1024

# Lifecycle: in-flight requests get this long to finish after SIGTERM.
SHUTDOWN_GRACE_S = 10.0

# Read API paging.
JOBS_PAGE_DEFAULT = 50
JOBS_PAGE_MAX = 500

# Delivery of outputs. Replicate deletes outputs about an hour after a job ends, so
# the first attempts come quickly and the backoff stays well inside that hour.
DELIVERY_MAX_ATTEMPTS = 8
DELIVERY_BACKOFF_BASE_S = 2.0
DELIVERY_BACKOFF_MAX_S = 300.0
# 404/410 means the file is gone; a couple more tries cover a passing glitch.
SOURCE_EXPIRED_ATTEMPTS = 3
# A worker renews its lease every third of it; a crashed worker's task is taken
# up again once the lease has run out.
DELIVERY_LEASE_S = 60.0
DELIVERY_POLL_S = 1.0
DOWNLOAD_CHUNK_BYTES = 1024 * 1024
# A trained model is a few GiB at most; the cap stops a runaway response.
MAX_OUTPUT_FILE_BYTES = 64 * 1024**3
MAX_OUTPUT_NAME_BYTES = 200
PROGRESS_LOG_S = 10.0
# S3 multipart: 8 MiB parts keep memory bounded and stay above S3's 5 MiB minimum.
S3_PART_BYTES = 8 * 1024 * 1024
# Parts uploaded at once: most of boto3's throughput at a small, fixed memory cost.
S3_PARTS_IN_FLIGHT = 2
# Outbound HTTP: a dead host is noticed quickly; a stalled transfer within a minute.
HTTP_CONNECT_TIMEOUT_S = 10.0
HTTP_READ_TIMEOUT_S = 60.0

# Replicate's HTTP API. The official Python client waits 5 s to connect and 30 s to
# read; a slower answer is better retried than waited for.
REPLICATE_API_BASE = "https://api.replicate.com/v1"
REPLICATE_TRAINER_MODEL = "simpletuner/advanced-trainer"
REPLICATE_CONNECT_TIMEOUT_S = 5.0
REPLICATE_READ_TIMEOUT_S = 30.0
# Attempts per call, the first included; GETs retry 429 and 5xx, POSTs only 429
# (another status may mean the POST took effect). The backoff doubles from the base,
# +/-10 % jitter; a Retry-After longer than the cap is cut to it.
REPLICATE_MAX_ATTEMPTS = 5
REPLICATE_BACKOFF_BASE_S = 0.5
REPLICATE_BACKOFF_MAX_S = 30.0
# Error bodies are short problem+json documents; anything larger is cut.
REPLICATE_ERROR_BODY_BYTES = 64 * 1024
# A training snapshot carries its whole log, like a webhook body.
REPLICATE_MAX_RESPONSE_BYTES = MAX_BODY_BYTES
# Version lists are a few pages; the cap stops a `next` loop.
REPLICATE_MAX_PAGES = 100
# Reconciliation polls every unfinished job once per interval (+/-20 % jitter): a
# few requests a minute, far below the 3000/min Replicate allows for GETs.
RECONCILE_INTERVAL_S = 60.0
RECONCILE_JITTER = 0.2
RECONCILE_MAX_JOBS = 500
# Replicate's public status page (Atlassian Statuspage). A status check is advice
# only: it must answer fast, and "unknown" is better than a wait.
REPLICATE_STATUS_URL = "https://www.replicatestatus.com"
REPLICATE_STATUS_TIMEOUT_S = 3.0
REPLICATE_STATUS_MAX_BYTES = 64 * 1024
# Fetched signing secret: a delivery that fails verification may trigger a refetch
# (the secret may have rotated), but forged requests must not make the daemon call
# Replicate more than once in this long; failed start-up fetches retry as often.
SECRET_REFETCH_INTERVAL_S = 60.0
# How long a delivery that failed verification waits for that refetch before it
# is answered 503 (the fetch goes on): webhooks are answered within a second.
SECRET_REFRESH_WAIT_S = 0.5

# Cost: Replicate's list prices in USD per hour at the time of writing; the table
# in [cost] adds to or overrides these. A job whose hardware is unknown is priced
# as the default hardware.
HARDWARE_PRICES_PER_HOUR = {"L40S": 3.50, "A100 (80GB)": 5.00}
DEFAULT_HARDWARE = "L40S"
COST_PERIODS = ("daily", "weekly", "monthly")
COST_ACTIONS = ("warn", "block")
# A job is looked for this long before a period starts: it may have been created
# (queued) before the period and started inside it.
COST_LOOKBACK_S = 7 * 86400.0
# Submit warns once recorded spend reaches this share of the limit, whatever the
# action, so that a block does not come as a surprise.
COST_WARN_SHARE = 0.8

# Submitting trainings. Replicate sends only the events named here; "logs" comes
# at most about every 500 ms, "start" once, "completed" once.
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
IDEMPOTENCY_KEY_MAX = 200
# Largest training configuration (config + dataloader + LyCORIS JSON) accepted.
SUBMIT_MAX_BODY_BYTES = 4 << 20
# A submission still pending this long after it began, in no request of this
# process, was interrupted (daemon killed mid-call): reconciliation looks for the
# training among the account's newest and links it, and gives up after the
# second figure (Replicate answers within seconds when it creates one).
SUBMIT_ORPHAN_AFTER_S = 120.0
SUBMIT_ORPHAN_GIVE_UP_S = 3600.0
# The newest trainings are matched this far before a submission began (clock skew).
SUBMIT_MATCH_SKEW_S = 300.0

# Live updates (GET /api/events). A browser that cannot keep up loses its queue
# and is told to read everything again, so a queue never grows past this.
LIVE_QUEUE_NOTICES = 256
# Open event streams at once: a dashboard holds one or two per tab.
LIVE_MAX_STREAMS = 64
# A comment line this often keeps proxies from closing an idle stream (nginx's
# proxy_read_timeout defaults to 60 s).
LIVE_KEEPALIVE_S = 15.0
# How often a waiting stream looks whether its browser has gone, so that a closed
# tab frees its place among LIVE_MAX_STREAMS within about this long.
LIVE_CLIENT_CHECK_S = 1.0
# How long a browser waits before reconnecting a dropped stream.
LIVE_RETRY_MS = 2000
# Largest dataset archive sent to POST /v1/files, given or packed.
DATASET_MAX_BYTES = 20 << 30
# Largest max_train_steps passed to the trainer.
MAX_TRAIN_STEPS = 10_000_000
# Deepest nesting of arrays and objects accepted in a JSON request body.
JSON_MAX_DEPTH = 64
# Largest PUT /api/cloud/providers/replicate body: settings are small.
SETTINGS_MAX_BODY_BYTES = 64 * 1024
# Bounds on configuration lists and names, so that no setting can make every
# request slow (allowlists are scanned per request, prices per job listed).
MAX_NETWORKS = 1024
MAX_PRICES = 256
MAX_HARDWARE_NAME = 64
MAX_URL_CHARS = 2048
