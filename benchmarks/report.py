"""The targets the benchmark is judged against, and results.md."""

import math

# (key, description, operator, limit). Targets on the served catalog use
# its 4-client runs unless the description names another concurrency.
TARGETS = (
    ("encode_ratio", "encoding, Lookalike / Keras", ">=", 2.0),
    ("train_ratio", "training step, Lookalike / Keras", ">=", 1.5),
    ("image_p50", "QueryByImage p50, catalog, 4 clients (ms)", "<=", 10.0),
    ("image_p99", "QueryByImage p99, catalog, 4 clients (ms)", "<=", 30.0),
    ("id_p50_1", "QueryById p50, catalog, 1 client (ms)", "<=", 3.0),
    ("id_p50", "QueryById p50, catalog, 4 clients (ms)", "<=", 3.0),
    ("id_rps", "QueryById/s, catalog, 16 clients", ">=", 300.0),
    (
        "largest_id_p50",
        "QueryById p50, largest synthetic, 4 clients (ms)",
        "<=",
        10.0,
    ),
    ("largest_recall", "recall@10, largest synthetic", ">=", 0.95),
)


def measured_values(results: dict) -> dict[str, float | None]:
    """The value each target is judged on (None when not measured)."""
    model = results["model"]
    catalogs = results["serving"]["catalogs"]
    real = catalogs[0] if catalogs else None
    largest = catalogs[-1] if len(catalogs) > 1 else None

    def get(catalog: dict | None, method: str, clients: int, key: str):
        if catalog is None:
            return None
        return catalog[method].get(str(clients), {}).get(key)

    return {
        "encode_ratio": model["ratios"]["encode"],
        "train_ratio": model["ratios"]["train_step"],
        "image_p50": get(real, "QueryByImage", 4, "p50_ms"),
        "image_p99": get(real, "QueryByImage", 4, "p99_ms"),
        "id_p50_1": get(real, "QueryById", 1, "p50_ms"),
        "id_p50": get(real, "QueryById", 4, "p50_ms"),
        "id_rps": get(real, "QueryById", 16, "requests_per_s"),
        "largest_id_p50": get(largest, "QueryById", 4, "p50_ms"),
        "largest_recall": largest["recall_at_10"] if largest else None,
    }


def judge(results: dict) -> list[dict]:
    """One row per target: the value, whether it is met, and by how much
    it falls short."""
    return judge_values(measured_values(results))


def judge_values(values: dict[str, float | None]) -> list[dict]:
    """judge for the targets named in values."""
    rows = []
    for key, description, operator, limit in TARGETS:
        if key not in values:
            continue
        value = values[key]
        if value is None or not math.isfinite(value):
            verdict, met = "not measured", None
        elif (value >= limit) if operator == ">=" else (value <= limit):
            verdict, met = "met", True
        elif operator == ">=":
            verdict, met = f"short by {(1 - value / limit) * 100:.0f}%", False
        else:
            verdict, met = f"{value / limit:.1f}x over the limit", False
        rows.append(
            {
                "target": key,
                "description": description,
                "operator": operator,
                "limit": limit,
                "value": value,
                "met": met,
                "verdict": verdict,
            }
        )
    return rows


def _number(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def markdown(results: dict) -> str:
    """results.json as readable tables."""
    meta = results["meta"]
    lines = [
        "# Lookalike benchmark"
        + (" (--quick smoke run)" if meta["quick"] else ""),
        "",
        f"{meta['started_at']}, {meta['seconds']:.0f} s; {meta['machine']}.",
        "",
        "1-minute load average at the start of each section: "
        + ", ".join(
            f"{name} {values[0]:.1f}"
            for name, values in meta["load_averages"].items()
        )
        + " (well above 0 means other processes shared the cores).",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ["target", "limit", "measured", "verdict"],
        [
            [
                row["description"],
                f"{row['operator']} {_number(row['limit'])}",
                _number(row["value"]),
                row["verdict"],
            ]
            for row in results["targets"]
        ],
    )

    model = results["model"]
    ours = model["lookalike"]
    lines += [
        "## Model throughput (images/s, median of "
        f"{model['lookalike']['encode']['reps']} after warm-up)",
        "",
        f"Images: {model['images']}. Lookalike: JAX {ours['jax']} on "
        f"{ours['backend']}, {ours['params']:,} parameters.",
        "",
    ]
    rows = [
        [
            "Lookalike (Flax, jitted)",
            _number(model["lookalike"]["encode"]["images_per_s"], 1),
            _number(model["lookalike"]["train_step"]["images_per_s"], 1),
            "",
        ]
    ]
    for key, label in (
        ("keras", "Keras reference (research, 3x3 up-convs)"),
        ("keras_same_arch", "Keras, Lookalike's 2x2 up-convs"),
    ):
        keras = model.get(key)
        if keras is None:
            continue
        if not keras.get("installed"):
            rows.append([label, "not installed", "not installed", ""])
        elif "error" in keras:
            rows.append([label, "failed", "failed", keras["error"][:80]])
        else:
            rows.append(
                [
                    label,
                    _number(keras["encode"]["images_per_s"], 1),
                    _number(keras["train_step"]["images_per_s"], 1),
                    f"TF {keras['tensorflow']}, XLA "
                    f"{'on' if keras['jit_compile'] else 'off'}, "
                    f"{keras['params']:,} weights",
                ]
            )
    ratios = model["ratios"]
    rows.append(
        [
            "ratio Lookalike / Keras reference",
            _number(ratios["encode"]) + "x" if ratios["encode"] else "-",
            _number(ratios["train_step"]) + "x"
            if ratios["train_step"]
            else "-",
            "",
        ]
    )
    encode_batch = model["lookalike"]["encode"]["batch"]
    train_batch = model["lookalike"]["train_step"]["batch"]
    lines += _table(
        [
            "model",
            f"encode (batch {encode_batch})",
            f"train step (batch {train_batch})",
            "notes",
        ],
        rows,
    )

    indexing = results["indexing"]
    lines += ["## Indexing throughput", ""]
    lines += _table(
        [
            "store",
            "points",
            "upsert s",
            "optimize s",
            "upsert points/s",
            "points/s with optimize",
        ],
        [
            [
                row["backend"],
                f"{row['points']:,}",
                _number(row["upsert_s"]),
                _number(row["optimize_s"]),
                _number(row["upsert_points_per_s"], 0),
                _number(row["points_per_s"], 0),
            ]
            for row in indexing["backends"]
        ],
    )
    if indexing.get("catalog_job"):
        job = indexing["catalog_job"]
        lines += [
            f"Indexing job on the photo catalog ({job['points']:,} products): "
            f"encode {job['encode_s']:.1f} s, k-means {job['kmeans_s']:.1f} s, "
            f"upsert + optimize {job['upsert_s']:.1f} s; "
            f"{job['points_per_s']:,.0f} products/s end to end.",
            "",
        ]

    serving = results["serving"]
    lines += [
        "## gRPC over loopback",
        "",
        f"Server: {serving['server']}. Clients: {serving['clients']}. "
        f"{serving['duration_s']:g} s per run after "
        f"{serving['warmup_s']:g} s of warm-up; top_k=10.",
        "",
    ]
    catalog_rows = []
    for catalog in serving["catalogs"]:
        catalog_rows.append(
            [
                catalog["name"],
                f"{catalog['points']:,}",
                catalog["search"],
                _number(catalog["build_s"], 1),
                _number(catalog["recall_at_10"], 3),
                _number(catalog["server_started_mib"], 0),
                _number(catalog["vm_hwm_mib"], 0),
            ]
        )
    lines += _table(
        [
            "catalog",
            "points",
            "search",
            "build s",
            "recall@10",
            "server RSS at start MiB",
            "server peak RSS MiB",
        ],
        catalog_rows,
    )
    latency_rows = []
    for catalog in serving["catalogs"]:
        for method in ("QueryById", "QueryByImage"):
            for clients, numbers in catalog[method].items():
                errors = sum(numbers["errors"].values())
                latency_rows.append(
                    [
                        catalog["name"],
                        method,
                        clients,
                        _number(numbers["p50_ms"]),
                        _number(numbers["p95_ms"]),
                        _number(numbers["p99_ms"]),
                        _number(numbers["requests_per_s"], 0),
                        _number(numbers.get("server_cpu_ms_per_request")),
                        _number(
                            numbers.get("load_generator_cpu_ms_per_request")
                        ),
                        str(errors),
                    ]
                )
    lines += _table(
        [
            "catalog",
            "method",
            "clients",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "req/s",
            "server CPU ms/req",
            "client CPU ms/req",
            "errors",
        ],
        latency_rows,
    )
    if results.get("notes"):
        lines += ["Notes:", ""]
        lines += [f"- {note}" for note in results["notes"]]
    return "\n".join(lines).rstrip() + "\n"
