"""Settings from `TUNESMITH_*` environment variables, with the embedded default when unset.

The embedded default (SQLite file, a broker on SQLite, local folders) differs from
production only in URLs: the code that runs a job is the same.
"""

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TUNESMITH_", extra="ignore")

    home: Path = Field(
        default=Path("~/.tunesmith"),
        description="The one data folder: database file, uploads, models and artifacts.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file under home."
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker; default: kombu's SQLAlchemy transport on SQLite."
    )
    storage_url: str | None = Field(
        default=None, description="Where uploaded files, checkpoints and artifacts live: a "
        "local folder (default: home) or `s3://bucket/prefix` on any S3-compatible store, "
        "with the standard AWS credential variables. With a store, home holds only scratch.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="The S3 endpoint of a store other than AWS (MinIO, "
        "SeaweedFS, R2...), e.g. http://store:8333.",
    )
    s3_multipart_bytes: int = Field(
        default=64 * 1024 * 1024, description="Files from this size up go to the store in "
        "parallel multipart uploads (parts of at least this size, 5 MiB minimum).",
    )
    storage_presigned_downloads: bool = Field(
        default=False, description="Answer a download of a checkpoint or artifact file with a "
        "redirect to a presigned URL of the store (the client then needs to reach the store) "
        "instead of streaming it through the API.",
    )
    storage_presigned_seconds: int = Field(
        default=3600, description="How long a presigned download URL stays valid."
    )
    queue: str = Field(default="gpu", description="Celery queue that training jobs are sent to.")
    models_root: Path | None = Field(
        default=None, description="Where model folders live; default: home/models."
    )
    allow_hub_downloads: bool = Field(
        default=True, description="Resolve unknown model names as Hugging Face hub ids."
    )
    trust_remote_code: bool = Field(
        default=False, description="Let model repos run their own code. Off unless you trust them."
    )
    lease_seconds: float = Field(
        default=60.0, description="A running job whose lease is older than this is requeued."
    )
    heartbeat_seconds: float = Field(default=5.0, description="How often a worker renews a lease.")
    reaper_interval_seconds: float = Field(
        default=10.0, description="How often the API checks for expired leases and lost messages."
    )
    redispatch_after_seconds: float = Field(
        default=120.0, description="Resend a queued job's message when unclaimed for this long."
    )
    no_worker_warning_seconds: float = Field(
        default=60.0, description="A job queued this long on a queue no live worker consumes "
        "gets an event saying so.",
    )
    max_attempts: int = Field(
        default=3, description="Attempts before a job whose worker died fails."
    )
    cancel_grace_seconds: float = Field(
        default=5.0, description="Time a cancelled child gets to checkpoint before it is killed."
    )
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, description="Largest upload accepted.")
    max_line_bytes: int = Field(default=4 * 1024 * 1024, description="Longest JSONL line accepted.")
    max_queued_jobs_per_project: int = Field(default=100, description="Queued jobs per project.")
    max_job_body_bytes: int = Field(
        default=1024 * 1024, description="Largest job body (JSON) accepted; larger ones get 413."
    )
    warm_start: bool = Field(
        default=True, description="Fork training processes from a server that has already "
        "imported the training libraries (saves ~8 s a job). The server never initialises "
        "CUDA, so GPU nodes fork from it too. Default: on.",
    )
    hub_kernels: bool = Field(
        default=False, description="Let transformers swap layers for kernels fetched from the "
        "Hugging Face hub (`USE_HUB_KERNELS`). Off: a load then never needs a network nor runs "
        "code from the hub, whatever trust_remote_code says.",
    )
    rate_limit_per_second: float = Field(
        default=50.0, description="Requests per API key per second (0 turns the limit off)."
    )
    rate_limit_burst: int = Field(default=200, description="Requests a key may send at once.")
    max_rows_per_file: int = Field(default=10_000_000, description="Rows an upload may hold.")
    max_event_streams_per_key: int = Field(
        default=20, description="Event streams (`?stream=true`) one API key may hold open in "
        "one API process; one more answers 429. A waiting stream holds no connection or thread.",
    )
    event_poll_seconds: float = Field(
        default=0.5, description="How often open event streams look for new events "
        "(one query per API process for all of them).",
    )
    job_time_limit_seconds: float = Field(
        default=7 * 24 * 3600.0, description="A job running longer than this is stopped and failed."
    )
    oom_max_halvings: int = Field(
        default=3, description="On an out-of-memory error, halve the micro-batch (doubling "
        "gradient accumulation, so the effective batch stays) up to this many times, resuming "
        "from the last checkpoint; then turn on activation checkpointing; then fail.",
    )
    memory_limit_gib: float | None = Field(
        default=None, description="Memory the automatic setup may plan for on a device without "
        "CUDA (none: no limit). On CUDA the device's free memory is the limit.",
    )
    gpu_classes: str = Field(
        default="", description="The workers' GPU classes and their memory in GiB, "
        "'class=GiB' pairs separated by commas (\"h100=80,l4=24\"): a dry run says which "
        "of them a job fits. Empty: the dry run answers the estimate only.",
    )
    inference_url: str | None = Field(
        default=None, description="Where the API sends chat and completion requests: the "
        "`tunesmith inference` process (default: the local one on inference_port), or a vLLM "
        "OpenAI server with LoRA enabled (see inference_backend).",
    )
    inference_backend: str = Field(
        default="tunesmith", description="What inference_url points at: 'tunesmith' (our "
        "process: every tuning) or 'vllm' (LoRA, QLoRA and full models are loaded into it "
        "with /v1/load_lora_adapter; the other tunings are refused).",
    )
    inference_port: int = Field(default=8100, description="Port of the local inference process.")
    inference_memory_budget_mib: float = Field(
        default=8192.0, description="Weights the inference process keeps loaded (bases, "
        "adapters, full models); past it the least recently used are evicted.",
    )
    inference_max_concurrent: int = Field(
        default=16, description="Requests the inference process serves at once; concurrent "
        "non-streaming ones for one model share batched `generate` calls, so more slots mean "
        "larger batches.")
    inference_max_waiting: int = Field(
        default=64, description="Requests that may wait for a free generation slot; one more "
        "answers 429 with Retry-After.",
    )
    inference_wait_seconds: float = Field(
        default=60.0, description="A request that waits longer than this for a free slot "
        "answers 503 with Retry-After.",
    )
    inference_batch_window_ms: float = Field(
        default=2.0, description="How long the first of several concurrent non-streaming "
        "requests for one model waits for others to share its `generate` call (greedy ones, "
        "or ones with the same temperature and top_p, without seed or stop).",
    )
    inference_max_batch: int = Field(
        default=16, description="Most requests one batched `generate` call runs.")
    inference_max_tokens: int = Field(
        default=1024, description="Largest `max_tokens` a completion request may ask for (also "
        "the default when it asks for none).",
    )
    webhook_allow_private_urls: bool = Field(
        default=False, description="Let webhooks reach loopback, private, link-local and "
        "reserved addresses. Off: an API user cannot aim the server at its own network (SSRF).",
    )
    webhook_max_attempts: int = Field(
        default=8, description="Deliveries of one webhook event before it is given up "
        "(recorded as `failed` in the endpoint's delivery log).",
    )
    webhook_retry_base_seconds: float = Field(
        default=10.0, description="Wait after a webhook's first failed delivery; each further "
        "failure doubles it (with jitter), up to webhook_retry_max_seconds.",
    )
    webhook_retry_max_seconds: float = Field(
        default=3600.0, description="Longest wait between two deliveries of one webhook event.",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, description="How long a webhook receiver may take to answer.",
    )
    webhook_poll_seconds: float = Field(
        default=1.0, description="How often the API's webhook sender looks for due deliveries.",
    )
    webhook_secret_key: str | None = Field(
        default=None, description="A Fernet key (`python -c 'from cryptography.fernet import "
        "Fernet; print(Fernet.generate_key().decode())'`) that encrypts webhook signing "
        "secrets in the database. Unset: they are stored as they are, readable by whoever "
        "reads the database.",
    )
    test_faults: bool = Field(
        default=False, description="Tests only: honour the test_fault_* settings below. "
        "Never set in production.",
    )
    test_fault_oom_at_step: int | None = Field(
        default=None, description="Tests only (with test_faults): raise torch.OutOfMemoryError "
        "at the start of this step, once per job.",
    )
    test_fault_nan_at_step: int | None = Field(
        default=None, description="Tests only (with test_faults): put a NaN into a trained "
        "weight at the start of this step (a real divergence on the tiny model is not reliable: "
        "AdamW bounds every update).",
    )

    @cached_property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home_dir / 'tunesmith.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home_dir / 'broker.db'}"

    @property
    def storage_is_s3(self) -> bool:
        return bool(self.storage_url and self.storage_url.startswith("s3://"))

    @property
    def storage_root(self) -> Path:
        """The folder that holds files/ and jobs/: the store itself when local, scratch
        (what this node works on) when the store is S3."""
        if self.storage_is_s3:
            return self.home_dir / "scratch"
        if self.storage_url:
            return Path(self.storage_url.removeprefix("file://")).expanduser().resolve()
        return self.home_dir

    @property
    def files_dir(self) -> Path:
        return self.storage_root / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.storage_root / "jobs"

    @property
    def models_dir(self) -> Path:
        return (self.models_root or self.home_dir / "models").expanduser().resolve()

    @property
    def inference_base_url(self) -> str:
        return (self.inference_url or f"http://127.0.0.1:{self.inference_port}").rstrip("/")

    def ensure_dirs(self) -> None:
        for path in (self.home_dir, self.files_dir, self.jobs_dir, self.models_dir):
            path.mkdir(parents=True, exist_ok=True)


settings = Settings()
