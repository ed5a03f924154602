"""The spec model: a Metamapper object parsed and checked once into typed values.

The CRD's schema (defaults, enums, CEL rules) already refused most bad input at the
apiserver; what is checked here is what only the operator can tell from the spec alone
(reserved names, settings that would leak credentials into a ConfigMap). Checks that
need the cluster (a Secret that does not exist) happen when references are resolved.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from metamapper_beat import REMOVE, with_nulls
from metamapper_urls import URLError, alternates, has_credentials, parse_url

# The worker image's own task_time_limit (tasks/metamapper/defaults.py), in force unless
# celery.settings declares another; a pool's default grace lets a warm shutdown outlast it.
WORKER_TASK_TIME_LIMIT = 1200
# The worker image's own broker_transport_options.visibility_timeout (for every transport),
# in force unless celery.settings declares another or removes it (kombu's own then).
WORKER_VISIBILITY_TIMEOUT = 3600
DEFAULT_GRACE_SECONDS = WORKER_TASK_TIME_LIMIT + 60

TRANSPORTS = {"redis": "redis", "rediss": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq",
              "pyamqp": "rabbitmq", "sqs": "sqs"}

# Environment the operator sets on every pod; a user's env may not override it.
RESERVED_ENV = frozenset({
    "METAMAPPER_BROKER_URL", "METAMAPPER_CELERY_CONFIG_MODULE", "METAMAPPER_CELERY_SETTINGS",
    "METAMAPPER_CELERY_BROKER_URL", "METAMAPPER_CELERY_RESULT_BACKEND",
    "POD_NAME", "POD_NAMESPACE",
})
# How pods start: `celery ...` as the container command, or the image's entrypoint with
# `worker` / `scheduler` and Celery's arguments (upstream Metamapper's contract).
COMMAND_STYLES = ("Celery", "Entrypoint")
# How the scheduler keeps to one beat: single-beat's Redis lock among `replicas` pods, or
# one pod that the operator never lets run beside another (for images without single-beat).
SCHEDULER_MODES = ("SingleBeat", "Standalone")
# Where beat keeps its schedule's state (each entry's last run): the lock's Redis, where a
# standby finds it, or a file in the pod (lost with it).
SCHEDULE_STORES = ("Redis", "File")
# Celery settings that carry credentials: they belong in Secrets, not in the ConfigMap.
SECRET_SETTINGS = frozenset({"broker_url", "broker_read_url", "broker_write_url",
                             "result_backend", "database_url", "broker_login_method"})
# Words in a setting's name (at any depth of celery.settings) that say its value is a
# credential, in the spellings of Celery and its backends and transports: redis_password,
# security_key_password, s3_secret_access_key, cassandra_auth_kwargs, sasl_plain_password,
# azureblockblob connection strings, cosmosdbsql_master_key, ...
CREDENTIAL_NAME = re.compile(r"passw|secret|token|credential|sasl|access_key|account_key|"
                             r"master_key|private_key|api_key|auth_kwargs|connection_string")

# Bounds on the numbers of a spec: the CRD's where it sets one; otherwise the largest the
# core computes with safely (the API's int32; a float, a datetime never overflows below).
MAX_REPLICAS = 1000
MAX_INT32 = 2**31 - 1
# A schedule window lasts at most 31 days (a whole month): longer is a minimum, not a window.
MAX_WINDOW_SECONDS = 31 * 24 * 3600
# The longest panic window and wait target: a pool woken from zero with a longer panic
# window would not scale down for as long, and a longer wait is a backlog left waiting.
MAX_HOLD_SECONDS = 600
# Where a schedule is tried once when parsed. croniter fails to find a start for an
# expression that names no day that exists (30 February, 31 April) from any instant, and
# finds one for every other within eight years (29 February), so one instant tells.
TRIAL_INSTANT = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
# A Kubernetes name that must be a DNS-1035 label (a Service's), and the longest a name
# built from metadata.name may be (a label value, a Service name).
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 63
# The children's names: "<metadata.name>-<suffix>", a pool's Deployment (and its
# PodDisruptionBudget) with the pool's name as the suffix.
SCHEDULER_SUFFIX = "scheduler"
FLOWER_SUFFIX = "flower"
CONFIG_SUFFIX = "celery"
NETWORK_POLICY_SUFFIX = "pods"


def child_name(fleet_name: str, suffix: str) -> str:
    """The name of a child of the Metamapper ``fleet_name``."""
    return f"{fleet_name}-{suffix}"


class SpecError(ValueError):
    """The spec cannot be run as written; ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, kw_only=True, slots=True)
class SecretKeyRef:
    name: str
    key: str


# Annotations that pause autoscaling of a Metamapper (KEDA's autoscaling.keda.sh/paused and
# paused-replicas, under this project's group).
PAUSED = "autoscaling.metamapper.io/paused"
PAUSED_REPLICAS = "autoscaling.metamapper.io/paused-replicas"


@dataclass(frozen=True, slots=True)
class Pause:
    """Autoscaling paused by annotation; ``replicas``, when set, pins every pool's size."""

    replicas: int | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A window that raises a pool's minimum: it opens at each time ``cron`` names (in
    ``time_zone``) and lasts ``duration_seconds``."""

    name: str
    cron: str
    duration_seconds: int
    min_replicas: int
    time_zone: str = "UTC"

    def last_start(self, now: datetime.datetime) -> datetime.datetime:
        """The latest time at or before ``now`` the cron expression names (UTC)."""
        zone = ZoneInfo(self.time_zone)
        # croniter's get_prev is strictly before its start: start at the next whole minute.
        start = (now.astimezone(datetime.UTC).replace(second=0, microsecond=0)
                 + datetime.timedelta(minutes=1))
        before: datetime.datetime = croniter(self.cron, start.astimezone(zone)).get_prev(
            datetime.datetime)
        return before.astimezone(datetime.UTC)

    def next_start(self, now: datetime.datetime) -> datetime.datetime:
        """The first time after ``now`` the cron expression names (UTC)."""
        after: datetime.datetime = croniter(
            self.cron, now.astimezone(ZoneInfo(self.time_zone))).get_next(datetime.datetime)
        return after.astimezone(datetime.UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class CredentialsRef:
    """A Secret holding a user name and a password, and the keys they are under (for SQS,
    the access key id and the secret access key)."""

    secret: str
    user_key: str
    password_key: str

    @property
    def user(self) -> SecretKeyRef:
        return SecretKeyRef(name=self.secret, key=self.user_key)

    @property
    def password(self) -> SecretKeyRef:
        return SecretKeyRef(name=self.secret, key=self.password_key)


@dataclass(frozen=True, slots=True)
class WarmUp:
    """Warming the pool before its fleet's beat sends it work (autoscale/waves.py): its
    minimum is at least ``replicas`` from shortly before an entry routed to its queues
    fires until shortly after."""

    enabled: bool = True
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class Autoscaling:
    enabled: bool = True
    target_backlog_per_replica: int | None = None
    activation_backlog: int = 0
    # Short, because a scale-down drains its workers first: no task is cut off (README).
    scale_down_stabilization_seconds: int = 60
    # Scale-down in steps towards what most of the window asked for (autoscaling.md).
    scale_down_percentile: int = 90
    scale_down_step_percent: int = 25
    panic_window_seconds: int = 6
    scale_to_zero_cooldown_seconds: int = 300
    tolerance: float = 0.1
    max_scale_up_step: int = 0
    fallback_replicas: int | None = None
    count_in_flight: bool = True
    # Every message started within this many seconds once a throughput is measured
    # (latency.py); 0 sizes from the backlog target alone. Left out: this default, or 0
    # when targetBacklogPerReplica is set (a backlog target given alone is the policy;
    # parse applies the rule, the CRD has no default for it).
    target_wait_seconds: float = 2.0
    schedules: tuple[Schedule, ...] = ()
    warm_up: WarmUp = field(default_factory=WarmUp)


@dataclass(frozen=True, slots=True)
class PodSettings:
    """Pod settings one pool sets over the fleet's (see :mod:`pod_settings` for the merge).

    Empty or None: the fleet's applies. ``topology_spread_constraints`` is None when the
    pool does not set it (an empty tuple turns the fleet's off for the pool).
    """

    image: str | None = None
    env: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    service_account_name: str | None = None
    automount_service_account_token: bool | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    priority_class_name: str | None = None
    topology_spread_constraints: tuple[Mapping[str, Any], ...] | None = None
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    init_containers: tuple[Mapping[str, Any], ...] = ()
    sidecars: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class DisruptionBudget:
    """A pool's PodDisruptionBudget: how many of its pods a drain may take at once."""

    enabled: bool = True
    max_unavailable: int | str = 1


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The fleet's optional NetworkPolicy: DNS plus the egress (and ingress) rules given."""

    enabled: bool = False
    egress: tuple[Mapping[str, Any], ...] = ()
    ingress: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    queues: tuple[str, ...]
    concurrency: int = 4
    min_replicas: int = 1
    max_replicas: int = 10
    resources: Mapping[str, Any] = field(default_factory=dict)
    termination_grace_period_seconds: int = DEFAULT_GRACE_SECONDS
    extra_args: tuple[str, ...] = ()
    # Celery's start-up sync with the other workers (revoked ids, clocks: a second waiting
    # for replies on every pod start) and its subscription to their events (every worker
    # hearing every other): both off unless asked for.
    mingle: bool = False
    gossip: bool = False
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    pods: PodSettings = field(default_factory=PodSettings)
    disruption: DisruptionBudget = field(default_factory=DisruptionBudget)

    @property
    def target_per_replica(self) -> int:
        return self.autoscaling.target_backlog_per_replica or self.concurrency


@dataclass(frozen=True, slots=True)
class Broker:
    url: str | None
    url_secret: SecretKeyRef | None
    transport: str | None
    redis_key_prefix: str = ""
    rabbitmq_management_url: str | None = None
    rabbitmq_credentials: CredentialsRef | None = None  # the management API's user
    sqs_region: str | None = None
    sqs_queue_name_prefix: str = ""
    sqs_credentials: CredentialsRef | None = None  # access key id and secret access key


@dataclass(frozen=True, slots=True)
class Lock:
    redis_url: str | None = None
    redis_url_secret: SecretKeyRef | None = None
    lock_time_seconds: int = 5
    heartbeat_interval_seconds: int = 1


@dataclass(frozen=True, slots=True)
class Scheduler:
    enabled: bool = True
    replicas: int = 2
    resources: Mapping[str, Any] = field(default_factory=dict)
    lock: Lock = field(default_factory=Lock)
    mode: str = "SingleBeat"
    schedule_store: str = "Redis"

    @property
    def standalone(self) -> bool:
        return self.mode == "Standalone"


@dataclass(frozen=True, slots=True)
class Flower:
    enabled: bool = False
    basic_auth_secret: SecretKeyRef | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Probes:
    """The pods' probes: the project's image's own (``enabled``), or Kubernetes Probe
    objects given in the spec, which replace them one by one."""

    enabled: bool = True
    worker_liveness: Mapping[str, Any] = field(default_factory=dict)
    worker_readiness: Mapping[str, Any] = field(default_factory=dict)
    scheduler_liveness: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PodOptions:
    """Settings shared by every pod of the fleet, kept as the API's own shapes."""

    image: str
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[Mapping[str, Any], ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    env_from: tuple[Mapping[str, Any], ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    service_account_name: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] = field(default_factory=dict)
    priority_class_name: str | None = None
    pod_security_context: Mapping[str, Any] = field(default_factory=dict)
    container_security_context: Mapping[str, Any] = field(default_factory=dict)
    automount_service_account_token: bool = False
    topology_spread_constraints: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    init_containers: tuple[Mapping[str, Any], ...] = ()
    sidecars: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Fleet:
    """One Metamapper object, typed."""

    namespace: str
    name: str
    uid: str
    generation: int
    pods: PodOptions
    broker: Broker
    celery_config_module: str
    celery_settings: Mapping[str, Any]
    pools: tuple[Pool, ...]
    scheduler: Scheduler
    suspend: bool = False
    pause: Pause | None = None
    command_style: str = "Celery"
    result_backend_secret: SecretKeyRef | None = None
    probes: Probes = field(default_factory=Probes)
    flower: Flower = field(default_factory=Flower)
    network_policy: NetworkPolicy = field(default_factory=NetworkPolicy)

    def pool(self, name: str) -> Pool:
        return next(p for p in self.pools if p.name == name)


def _integer(where: str, value: Any, *, minimum: int = 0, maximum: int = MAX_INT32) -> int:
    """``value`` if it is a whole number within the bounds (JSON's true is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SpecError(where, f"must be a whole number from {minimum} to {maximum}")
    return value


def _number(where: str, value: Any, *, minimum: float = 0.0, maximum: float = MAX_INT32
            ) -> float:
    """``value`` as a float if it is a number within the bounds (and a float can hold it)."""
    if not isinstance(value, bool) and isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            number = float("nan")
        if minimum <= number <= maximum:
            return number
    raise SpecError(where, f"must be a number from {minimum:g} to {maximum:g}")


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SpecError(where, "must be a string")
    return value


def _int_field(raw: Mapping[str, Any], key: str, where: str, default: int, *,
               minimum: int = 0, maximum: int = MAX_INT32) -> int:
    value = raw.get(key)
    if value is None:
        return default
    return _integer(f"{where}.{key}", value, minimum=minimum, maximum=maximum)


def transport_of(url: str) -> str:
    """redis, rabbitmq or sqs, from a broker URL's scheme (every URL of a failover list
    the same); the URL must be readable."""
    transports = set()
    for alternate in alternates(url):
        try:
            scheme = parse_url(alternate).scheme
        except URLError as err:
            raise SpecError("spec.broker", str(err)) from None
        if scheme not in TRANSPORTS:
            raise SpecError("spec.broker", f"unsupported broker URL scheme {scheme!r}; use "
                            "one of " + ", ".join(f"{s}://" for s in TRANSPORTS))
        if any(c.isspace() for c in alternate):
            raise SpecError("spec.broker", "a broker URL holds no white space")
        transports.add(TRANSPORTS[scheme])
    if len(transports) > 1:
        raise SpecError("spec.broker", "the URLs of a failover list must all be of one "
                        "transport")
    return transports.pop()


def _secret_ref(raw: Mapping[str, Any] | None, default_key: str = "url") -> SecretKeyRef | None:
    if not raw:
        return None
    return SecretKeyRef(name=raw["name"], key=raw.get("key", default_key))


def _credentials_ref(raw: Mapping[str, Any] | None, *, user_field: str, password_field: str,
                     user_key: str, password_key: str) -> CredentialsRef | None:
    """A ``credentialsSecretRef``: the Secret's name and the keys named by ``user_field``
    and ``password_field`` (``user_key`` and ``password_key`` when not given)."""
    if not raw:
        return None
    return CredentialsRef(secret=raw["name"], user_key=raw.get(user_field, user_key),
                          password_key=raw.get(password_field, password_key))


def _no_credentials(where: str, url: str | None, instead: str, *, user: bool = False) -> None:
    """Refuse a URL of the spec that carries a credential (anyone who may read the object
    would read it): a password, a ``?password=``-style parameter, an SQS key id, and with
    ``user`` any user information at all."""
    if url is not None and (has_credentials(url) or (user and "@" in url)):
        raise SpecError(where, "must not carry credentials (a user and password, a "
                        f"?password=-style parameter, a key id); {instead}")


def _parse_broker(raw: Mapping[str, Any]) -> Broker:
    url, secret = raw.get("url"), _secret_ref(raw.get("urlSecretRef"))
    if (url is None) == (secret is None):
        raise SpecError("spec.broker", "set exactly one of broker.url or broker.urlSecretRef")
    transport = raw.get("transport")
    if url is not None:
        derived = transport_of(url)
        _no_credentials("spec.broker.url", url,
                        "put the URL in a Secret and use broker.urlSecretRef")
        if transport and transport != derived:
            raise SpecError("spec.broker.transport",
                            f"{transport!r} does not match the URL's scheme ({derived})")
        transport = derived
    redis, rabbit, sqs = raw.get("redis") or {}, raw.get("rabbitmq") or {}, raw.get("sqs") or {}
    _no_credentials("spec.broker.rabbitmq.managementURL", rabbit.get("managementURL"),
                    "use rabbitmq.credentialsSecretRef", user=True)
    return Broker(
        url=url, url_secret=secret, transport=transport,
        redis_key_prefix=redis.get("globalKeyPrefix", ""),
        rabbitmq_management_url=rabbit.get("managementURL"),
        rabbitmq_credentials=_credentials_ref(
            rabbit.get("credentialsSecretRef"), user_field="usernameKey",
            password_field="passwordKey", user_key="username", password_key="password"),
        sqs_region=sqs.get("region"),
        sqs_queue_name_prefix=sqs.get("queueNamePrefix", ""),
        sqs_credentials=_credentials_ref(
            sqs.get("credentialsSecretRef"), user_field="accessKeyIdKey",
            password_field="secretAccessKeyKey", user_key="AWS_ACCESS_KEY_ID",
            password_key="AWS_SECRET_ACCESS_KEY"),
    )


def _parse_schedule(where: str, raw: Mapping[str, Any]) -> Schedule:
    """A schedule window, tried once: what is accepted here the autoscaler can evaluate."""
    schedule = Schedule(
        name=_text(f"{where}.name", raw["name"]), cron=_text(f"{where}.cron", raw["cron"]),
        duration_seconds=_integer(f"{where}.durationSeconds", raw["durationSeconds"],
                                  minimum=1, maximum=MAX_WINDOW_SECONDS),
        min_replicas=_integer(f"{where}.minReplicas", raw["minReplicas"],
                              maximum=MAX_REPLICAS),
        time_zone=_text(f"{where}.timeZone", raw.get("timeZone", "UTC")))
    # Five fields only: croniter would also take a sixth (seconds), which cron does not know.
    if len(schedule.cron.split()) != 5 or not croniter.is_valid(schedule.cron):
        raise SpecError(f"{where}.cron", f"{schedule.cron!r} is not a cron expression of "
                        "five fields (minute hour day-of-month month day-of-week)")
    try:
        ZoneInfo(schedule.time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SpecError(f"{where}.timeZone", f"unknown time zone {schedule.time_zone!r}; use "
                        "an IANA name such as Europe/Berlin") from None
    try:
        opened = schedule.last_start(TRIAL_INSTANT)
        schedule.next_start(TRIAL_INSTANT)
        opened + datetime.timedelta(seconds=schedule.duration_seconds)
    except (ValueError, OverflowError):  # croniter's errors are ValueErrors
        raise SpecError(f"{where}.cron", f"{schedule.cron!r} (schedule {schedule.name!r}) "
                        "names no time that exists (a day the month does not have?)") from None
    return schedule


def _parse_autoscaling(where: str, raw: Mapping[str, Any]) -> Autoscaling:
    defaults = Autoscaling()
    schedules = tuple(_parse_schedule(f"{where}.schedules[{i}]", s)
                      for i, s in enumerate(raw.get("schedules") or ()))
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        raise SpecError(f"{where}.schedules", "schedule names must be unique")
    per_replica, fallback = raw.get("targetBacklogPerReplica"), raw.get("fallbackReplicas")
    wait = raw.get("targetWaitSeconds",
                   defaults.target_wait_seconds if per_replica is None else 0.0)
    tolerance = raw.get("tolerance", defaults.tolerance)
    return Autoscaling(
        enabled=raw.get("enabled", defaults.enabled),
        target_backlog_per_replica=None if per_replica is None else _integer(
            f"{where}.targetBacklogPerReplica", per_replica, minimum=1),
        activation_backlog=_int_field(raw, "activationBacklog", where,
                                      defaults.activation_backlog),
        scale_down_stabilization_seconds=_int_field(
            raw, "scaleDownStabilizationSeconds", where,
            defaults.scale_down_stabilization_seconds),
        scale_down_percentile=_int_field(raw, "scaleDownPercentile", where,
                                         defaults.scale_down_percentile, minimum=1,
                                         maximum=100),
        scale_down_step_percent=_int_field(raw, "scaleDownStepPercent", where,
                                           defaults.scale_down_step_percent, minimum=1,
                                           maximum=100),
        panic_window_seconds=_int_field(raw, "panicWindowSeconds", where,
                                        defaults.panic_window_seconds,
                                        maximum=MAX_HOLD_SECONDS),
        scale_to_zero_cooldown_seconds=_int_field(
            raw, "scaleToZeroCooldownSeconds", where, defaults.scale_to_zero_cooldown_seconds),
        tolerance=_number(f"{where}.tolerance", tolerance, maximum=1.0),
        max_scale_up_step=_int_field(raw, "maxScaleUpStep", where, defaults.max_scale_up_step),
        fallback_replicas=None if fallback is None else _integer(
            f"{where}.fallbackReplicas", fallback, maximum=MAX_REPLICAS),
        count_in_flight=raw.get("countInFlight", defaults.count_in_flight),
        target_wait_seconds=_number(f"{where}.targetWaitSeconds", wait,
                                    maximum=MAX_HOLD_SECONDS),
        schedules=schedules,
        warm_up=_parse_warm_up(f"{where}.warmUp", _object(raw, "warmUp", where)),
    )


def _parse_warm_up(where: str, raw: Mapping[str, Any]) -> WarmUp:
    defaults = WarmUp()
    return WarmUp(enabled=raw.get("enabled", defaults.enabled),
                  replicas=_int_field(raw, "replicas", where, defaults.replicas, minimum=1,
                                      maximum=MAX_REPLICAS))


def _items(raw: Mapping[str, Any], key: str, where: str) -> tuple[Mapping[str, Any], ...]:
    """A list of API objects (env, volumes, tolerations, ...), kept as they are."""
    value = raw.get(key) or ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, Mapping) for v in value):
        raise SpecError(f"{where}.{key}", "must be a list of objects")
    return tuple(value)


def _object(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """An API object (resources, affinity, a security context, ...), kept as it is."""
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{where}.{key}", "must be an object")
    return value


def _string_map(raw: Mapping[str, Any], key: str, where: str) -> Mapping[str, str]:
    """Labels, annotations, a node selector: names to strings."""
    value = _object(raw, key, where)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise SpecError(f"{where}.{key}", "must map names to strings")
    return value


def _strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key) or ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise SpecError(f"{where}.{key}", "must be a list of non-empty strings")
    return tuple(value)


def _parse_pod_settings(where: str, raw: Mapping[str, Any]) -> PodSettings:
    image = raw.get("image")
    return PodSettings(
        image=None if image is None else _text(f"{where}.image", image),
        env=_items(raw, "env", where), env_from=_items(raw, "envFrom", where),
        labels=_string_map(raw, "podLabels", where),
        annotations=_string_map(raw, "podAnnotations", where),
        service_account_name=raw.get("serviceAccountName"),
        automount_service_account_token=raw.get("automountServiceAccountToken"),
        node_selector=_string_map(raw, "nodeSelector", where),
        tolerations=_items(raw, "tolerations", where),
        affinity=_object(raw, "affinity", where),
        priority_class_name=raw.get("priorityClassName"),
        topology_spread_constraints=None if raw.get("topologySpreadConstraints") is None
        else _items(raw, "topologySpreadConstraints", where),
        volumes=_items(raw, "volumes", where), volume_mounts=_items(raw, "volumeMounts", where),
        init_containers=_items(raw, "initContainers", where),
        sidecars=_items(raw, "sidecars", where),
    )


def _parse_disruption(raw: Mapping[str, Any]) -> DisruptionBudget:
    defaults = DisruptionBudget()
    return DisruptionBudget(enabled=raw.get("enabled", defaults.enabled),
                            max_unavailable=raw.get("maxUnavailable", defaults.max_unavailable))


def _parse_network_policy(raw: Mapping[str, Any]) -> NetworkPolicy:
    where = "spec.networkPolicy"
    return NetworkPolicy(enabled=bool(raw.get("enabled", False)),
                         egress=_items(raw, "egress", where),
                         ingress=_items(raw, "ingress", where))


def _parse_pool(index: int, raw: Mapping[str, Any]) -> Pool:
    where = f"spec.pools[{index}]"
    defaults = Pool(name="", queues=())
    pool = Pool(
        name=_text(f"{where}.name", raw["name"]), queues=_strings(raw, "queues", where),
        concurrency=_int_field(raw, "concurrency", where, defaults.concurrency,
                               minimum=1, maximum=1024),
        min_replicas=_int_field(raw, "minReplicas", where, defaults.min_replicas,
                                maximum=MAX_REPLICAS),
        max_replicas=_int_field(raw, "maxReplicas", where, defaults.max_replicas,
                                minimum=1, maximum=MAX_REPLICAS),
        resources=_object(raw, "resources", where),
        termination_grace_period_seconds=_int_field(
            raw, "terminationGracePeriodSeconds", where,
            defaults.termination_grace_period_seconds, minimum=1),
        extra_args=_strings(raw, "extraArgs", where),
        mingle=raw.get("mingle", defaults.mingle), gossip=raw.get("gossip", defaults.gossip),
        autoscaling=_parse_autoscaling(f"{where}.autoscaling",
                                       _object(raw, "autoscaling", where)),
        pods=_parse_pod_settings(where, raw),
        disruption=_parse_disruption(_object(raw, "podDisruptionBudget", where)),
    )
    if pool.min_replicas > pool.max_replicas:
        raise SpecError(f"{where}.minReplicas", "must be less than or equal to maxReplicas")
    if not pool.queues:
        raise SpecError(f"{where}.queues", "must name at least one queue")
    return pool


def _parse_scheduler(raw: Mapping[str, Any]) -> Scheduler:
    lock_raw = raw.get("lock") or {}
    defaults = Lock()
    _no_credentials("spec.scheduler.lock.redisURL", lock_raw.get("redisURL"),
                    "use redisURLSecretRef")
    lock = Lock(
        redis_url=lock_raw.get("redisURL"),
        redis_url_secret=_secret_ref(lock_raw.get("redisURLSecretRef")),
        lock_time_seconds=_int_field(lock_raw, "lockTimeSeconds", "spec.scheduler.lock",
                                     defaults.lock_time_seconds, minimum=2),
        heartbeat_interval_seconds=_int_field(
            lock_raw, "heartbeatIntervalSeconds", "spec.scheduler.lock",
            defaults.heartbeat_interval_seconds, minimum=1),
    )
    mode = raw.get("mode", "SingleBeat")
    if mode not in SCHEDULER_MODES:
        raise SpecError("spec.scheduler.mode", f"must be one of {', '.join(SCHEDULER_MODES)}")
    replicas = _int_field(raw, "replicas", "spec.scheduler", 1 if mode == "Standalone" else 2,
                          maximum=5)
    if mode == "Standalone" and replicas > 1:
        raise SpecError("spec.scheduler.replicas",
                        "must be 0 or 1 in Standalone mode (one beat pod, never two)")
    store = raw.get("scheduleStore", "Redis")
    if store not in SCHEDULE_STORES:
        raise SpecError("spec.scheduler.scheduleStore",
                        f"must be one of {', '.join(SCHEDULE_STORES)}")
    return Scheduler(enabled=raw.get("enabled", True), replicas=replicas,
                     resources=_object(raw, "resources", "spec.scheduler"), lock=lock,
                     mode=mode,
                     schedule_store=store)


def _parse_flower(raw: Mapping[str, Any]) -> Flower:
    flower = Flower(enabled=raw.get("enabled", False),
                    basic_auth_secret=_secret_ref(raw.get("basicAuthSecretRef"), "auth"),
                    resources=_object(raw, "resources", "spec.flower"))
    if flower.enabled and flower.basic_auth_secret is None:
        raise SpecError("spec.flower.basicAuthSecretRef",
                        "is required when Flower is enabled (Flower would be open to anyone "
                        "who reaches its Service)")
    return flower


def _parse_probes(raw: Mapping[str, Any]) -> Probes:
    return Probes(enabled=raw.get("enabled", True),
                  worker_liveness=_object(raw, "workerLiveness", "spec.probes"),
                  worker_readiness=_object(raw, "workerReadiness", "spec.probes"),
                  scheduler_liveness=_object(raw, "schedulerLiveness", "spec.probes"))


def _check_names(fleet: Fleet) -> None:
    """Every child's name is a valid Kubernetes name, and no two children of one kind
    share one (a pool named like the scheduler's or Flower's Deployment)."""
    reserved = {SCHEDULER_SUFFIX: "the scheduler Deployment"}
    if fleet.flower.enabled:
        reserved[FLOWER_SUFFIX] = "the Flower Deployment while flower.enabled is true"
        service = child_name(fleet.name, FLOWER_SUFFIX)
        if not DNS_1035_LABEL.fullmatch(fleet.name) or len(service) > MAX_NAME:
            raise SpecError("metadata.name", f"names the Flower Service {service!r}, which "
                            f"must be a DNS-1035 label (at most {MAX_NAME} characters: "
                            "lowercase letters, digits and '-', starting with a letter)")
    if any(len(child_name(fleet.name, suffix)) > MAX_NAME
           for suffix in (SCHEDULER_SUFFIX, CONFIG_SUFFIX, NETWORK_POLICY_SUFFIX)):
        raise SpecError("metadata.name", f"makes child names longer than {MAX_NAME} "
                        "characters (it prefixes them all and labels every pod)")
    for i, pool in enumerate(fleet.pools):
        where = f"spec.pools[{i}].name"
        if pool.name in reserved:
            raise SpecError(where, f"{pool.name!r} is the name of {reserved[pool.name]}")
        deployment = child_name(fleet.name, pool.name)
        if not DNS_1123_LABEL.fullmatch(pool.name) or len(deployment) > MAX_NAME:
            raise SpecError(where, f"makes the Deployment name {deployment!r}, which must "
                            f"be at most {MAX_NAME} characters (a pool name is a DNS label: "
                            "lowercase letters, digits and '-')")


def _check(fleet: Fleet) -> None:
    _check_names(fleet)
    _check_owned_settings(fleet)
    owners: dict[str, str] = {}
    for i, pool in enumerate(fleet.pools):
        for queue in pool.queues:
            if queue in owners:
                raise SpecError(f"spec.pools[{i}].queues",
                                f"queue {queue!r} is already consumed by pool {owners[queue]!r}")
            owners[queue] = pool.name
    envs = [("spec.env", fleet.pods.env)] + [
        (f"spec.pools[{i}].env", pool.pods.env) for i, pool in enumerate(fleet.pools)]
    for where, env in envs:
        for i, var in enumerate(env):
            if var.get("name") in RESERVED_ENV:
                raise SpecError(f"{where}[{i}].name",
                                f"{var['name']} is set by the operator and cannot be overridden")
    for i, pool in enumerate(fleet.pools):
        image = pool.pods.image
        if image is not None and (not image or image.strip() != image):
            raise SpecError(f"spec.pools[{i}].image",
                            "must be a non-empty image reference without spaces")
    if fleet.command_style not in COMMAND_STYLES:
        raise SpecError("spec.commandStyle", f"must be one of {', '.join(COMMAND_STYLES)}")
    if fleet.pods.image.strip() != fleet.pods.image or not fleet.pods.image:
        raise SpecError("spec.image", "must be a non-empty image reference without spaces")


# Celery settings the operator itself reads (the time limits, kombu's Redis layout), and
# what each must be for it to compute with them.
TIME_LIMITS = ("task_time_limit", "task_soft_time_limit")
TRANSPORT_OPTIONS = "broker_transport_options"
TRANSPORT_TEXTS = ("sep", "unacked_key", "unacked_index_key", "global_keyprefix")


def _check_celery_settings(given: Any) -> Mapping[str, Any]:
    """``given``, each key set to ``$remove`` set to None (both remove the key as the worker
    merges them: every reader, the worker's included, knows None), if the operator can read
    what it reads of them and they hold no credential (they are rendered into a ConfigMap)."""
    where = "spec.celery.settings"
    if not isinstance(given, Mapping) or not all(isinstance(k, str) for k in given):
        raise SpecError(where, "must map Celery setting names to values")
    _check_no_marker_in_lists(where, given)
    settings = with_nulls(given)
    if "task_time_limit" in settings and settings["task_time_limit"] is None:
        raise SpecError(f"{where}.task_time_limit", "cannot be removed: the operator sizes "
                        "grace periods and drains by the hard time limit; set a number of "
                        "seconds instead")
    for key in TIME_LIMITS:
        if settings.get(key) is not None:
            _number(f"{where}.{key}", settings[key])
    options = settings.get(TRANSPORT_OPTIONS)
    if options is not None:
        _check_transport_options(f"{where}.{TRANSPORT_OPTIONS}", options)
    _check_no_credentials(where, settings)
    return settings


def transport_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The kombu transport options of ``settings`` (Celery settings, as the model or
    ``builders.celery_settings`` has them) that are set: an option set to None is removed
    from the worker's, so kombu's own default is in force, and a reader (or the drain's
    Celery app) must not see it as a value."""
    options = settings.get(TRANSPORT_OPTIONS) or {}
    return {key: value for key, value in options.items() if value is not None}


def _check_no_marker_in_lists(where: str, value: Any, in_list: bool = False) -> None:
    """Refuse ``$remove`` anywhere inside a list: a list is replaced, not merged, so the
    marker would reach the worker as a literal string (a module to import, a queue)."""
    if in_list and isinstance(value, str) and value == REMOVE:
        raise SpecError(where, f"{REMOVE!r} removes a key of an object; inside a list it "
                        "would be taken as a literal string")
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _check_no_marker_in_lists(f"{where}.{key}", inner, in_list)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_no_marker_in_lists(f"{where}[{i}]", item, True)


def _check_owned_settings(fleet: Fleet) -> None:
    """Refuse the removal of a setting the operator sets itself for the rest of the spec to
    be true: the worker would run without it while the spec and status say otherwise."""
    where, settings = "spec.celery.settings", fleet.celery_settings
    if fleet.scheduler.schedule_store == "Redis":
        for key in ("beat_scheduler", "redbeat_key_prefix"):
            if key in settings and settings[key] is None:
                raise SpecError(f"{where}.{key}", "cannot be removed while "
                                "spec.scheduler.scheduleStore is Redis: the operator sets it "
                                "so the schedule's state is kept in the lock's Redis")
    broker = fleet.broker
    if TRANSPORT_OPTIONS in settings and settings[TRANSPORT_OPTIONS] is None and (
            broker.redis_key_prefix or broker.sqs_region or broker.sqs_queue_name_prefix):
        raise SpecError(f"{where}.{TRANSPORT_OPTIONS}", "cannot be removed as a whole while "
                        "spec.broker sets a key prefix, region or queue name prefix (the "
                        "operator adds them to it); remove its options one by one instead")


def _check_transport_options(where: str, options: Any) -> None:
    if not isinstance(options, Mapping):
        raise SpecError(where, "must map kombu transport option names to values")
    if options.get("visibility_timeout") is not None:
        _number(f"{where}.visibility_timeout", options["visibility_timeout"])
    steps = options.get("priority_steps")
    if steps is not None and (not isinstance(steps, list) or not steps or any(
            isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= 255
            for step in steps)):
        raise SpecError(f"{where}.priority_steps",
                        "must be a list of whole numbers from 0 to 255")
    for key in TRANSPORT_TEXTS:
        if options.get(key) is not None:   # None: removed, kombu's own
            _text(f"{where}.{key}", options[key])


def _check_no_credentials(where: str, value: Any, top: bool = True) -> None:
    """Refuse a setting, at any depth, whose name says it is a credential or whose value
    is a URL that carries one; the message names it and never shows the value."""
    found: str | None = None
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key).lower()
            if item not in (None, "") and ((top and name in SECRET_SETTINGS)
                                           or CREDENTIAL_NAME.search(name)):
                found = f"{where}.{key}"
                break
            _check_no_credentials(f"{where}.{key}", item, top=False)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_no_credentials(f"{where}[{i}]", item, top=False)
    elif isinstance(value, str) and "://" in value and has_credentials(value):
        found = where
    if found is not None:
        raise SpecError(found, "carries credentials and would be stored in a ConfigMap; "
                        "configure the broker in spec.broker and pass other credentials as "
                        "env from a Secret")


def parse_pause(annotations: Mapping[str, str]) -> Pause | None:
    """The pause the annotations ask for, or None. ``paused-replicas`` alone pauses too
    (as in KEDA); ``paused: "false"`` next to it is a contradiction."""
    paused, pinned = annotations.get(PAUSED), annotations.get(PAUSED_REPLICAS)
    flag = None if paused is None else paused.strip().lower()
    if flag not in (None, "true", "false"):
        raise SpecError(f"metadata.annotations[{PAUSED}]",
                        f'must be "true" or "false", not {paused!r}')
    if pinned is None:
        return Pause() if flag == "true" else None
    where = f"metadata.annotations[{PAUSED_REPLICAS}]"
    # ASCII digits only: str.isdigit also takes "²" and "٣", which int refuses or reads.
    if not re.fullmatch(r"[0-9]+", pinned.strip()) or int(pinned) > MAX_REPLICAS:
        raise SpecError(where, f"must be a whole number of pods from 0 to {MAX_REPLICAS}, "
                        f"not {pinned!r}")
    if flag == "false":
        raise SpecError(where, f'pins the pools while {PAUSED} is "false"; remove one of them')
    return Pause(int(pinned))


def parse(body: Mapping[str, Any]) -> Fleet:
    """Parse a Metamapper object; raises :class:`SpecError` naming the field."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    for required in ("image", "broker", "pools"):
        if required not in spec:
            raise SpecError(f"spec.{required}", "is required")
    try:
        pods = PodOptions(
            image=_text("spec.image", spec["image"]),
            image_pull_policy=spec.get("imagePullPolicy", "IfNotPresent"),
            image_pull_secrets=_items(spec, "imagePullSecrets", "spec"),
            env=_items(spec, "env", "spec"), env_from=_items(spec, "envFrom", "spec"),
            labels=_string_map(spec, "podLabels", "spec"),
            annotations=_string_map(spec, "podAnnotations", "spec"),
            service_account_name=spec.get("serviceAccountName"),
            node_selector=_string_map(spec, "nodeSelector", "spec"),
            tolerations=_items(spec, "tolerations", "spec"),
            affinity=_object(spec, "affinity", "spec"),
            priority_class_name=spec.get("priorityClassName"),
            pod_security_context=_object(spec, "podSecurityContext", "spec"),
            container_security_context=_object(spec, "containerSecurityContext", "spec"),
            automount_service_account_token=bool(spec.get("automountServiceAccountToken",
                                                          False)),
            topology_spread_constraints=_items(spec, "topologySpreadConstraints", "spec"),
            volumes=_items(spec, "volumes", "spec"),
            volume_mounts=_items(spec, "volumeMounts", "spec"),
            init_containers=_items(spec, "initContainers", "spec"),
            sidecars=_items(spec, "sidecars", "spec"),
        )
        celery = spec.get("celery") or {}
        fleet = Fleet(
            namespace=meta.get("namespace", ""), name=meta.get("name", ""),
            uid=meta.get("uid", ""), generation=int(meta.get("generation", 0)),
            pods=pods, broker=_parse_broker(spec["broker"]),
            celery_config_module=celery.get("configModule", "metamapper.celeryconfig"),
            celery_settings=_check_celery_settings(celery.get("settings") or {}),
            pools=tuple(_parse_pool(i, p) for i, p in enumerate(spec["pools"])),
            scheduler=_parse_scheduler(spec.get("scheduler") or {}),
            suspend=bool(spec.get("suspend", False)),
            pause=parse_pause(meta.get("annotations") or {}),
            command_style=spec.get("commandStyle", "Celery"),
            result_backend_secret=_secret_ref(celery.get("resultBackendSecretRef")),
            probes=_parse_probes(spec.get("probes") or {}),
            flower=_parse_flower(spec.get("flower") or {}),
            network_policy=_parse_network_policy(spec.get("networkPolicy") or {}),
        )
    except KeyError as err:
        raise SpecError("spec", f"missing required field {err.args[0]!r}") from None
    except (TypeError, AttributeError) as err:
        raise SpecError("spec", f"malformed: {err}") from None
    _check(fleet)
    return fleet
