"""The Spark engine of batch linking: a local Spark session, and a DuckDB-trained model made
to mean the same on Spark.

The stored model's comparison levels are DuckDB SQL (docs/empi.md).  For Spark they are
transpiled with sqlglot, and the two similarity functions Spark lacks —
``jaro_winkler_similarity`` and ``damerau_levenshtein`` — are bound to Python UDFs that run
``healthlink.empi.similarity``, the reference implementations that equal DuckDB's exactly.
Splink's own Scala similarity jar is not used: its functions are separate implementations,
not checked against DuckDB's, that have changed between releases, and the levels must mean the
same on both engines.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import sys
import tempfile
from typing import Any

from healthlink.empi.similarity import damerau_levenshtein, jaro_winkler

JARO_WINKLER_UDF = "healthlink_jaro_winkler"
DAMERAU_LEVENSHTEIN_UDF = "healthlink_damerau_levenshtein"

_session: Any = None


def spark_session(master: str | None = None, *, driver_memory: str = "2g", shuffle_partitions: int = 4) -> Any:
    """The process's Spark session, created on first use: ``master``, else ``$SPARK_MASTER``,
    else local mode for 2 cores (``local[2]``).

    Adaptive query execution is off: on small local data its re-planning costs more than it
    saves.  In local mode Splink writes its intermediate tables as parquet to the checkpoint
    directory, a temporary directory removed at exit.  On a cluster, create the session there
    (spark-submit, with a checkpoint directory) and pass it to ``link_batch``."""
    global _session
    if _session is not None and not _session.sparkContext._jsc.sc().isStopped():
        return _session
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise RuntimeError("the Spark engine needs pyspark: pip install 'healthlink[spark]'") from e
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        raise RuntimeError("the Spark engine needs Java 17 (java on PATH, or JAVA_HOME)")
    master = master or os.environ.get("SPARK_MASTER") or "local[2]"
    local = master.startswith("local")
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers run this interpreter
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (SparkSession.builder.master(master).appName("healthlink-empi")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.driver.memory", driver_memory)
               .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
               .config("spark.default.parallelism", str(shuffle_partitions))
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.sql.execution.pythonUDF.arrow.enabled", "true"))
    if local:
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
    try:
        _session = builder.getOrCreate()
    except Exception as e:  # py4j/JVM start-up failures come in several types
        raise RuntimeError(f"could not start Spark ({master}); is Java 17 installed? {e}") from e
    _session.sparkContext.setLogLevel("ERROR")
    if local:  # a cluster needs a shared checkpoint directory; without one Splink persists in memory
        checkpoints = tempfile.mkdtemp(prefix="healthlink-spark-")
        atexit.register(shutil.rmtree, checkpoints, True)
        _session.sparkContext.setCheckpointDir(checkpoints)
    return _session


def _jaro_winkler(a: str | None, b: str | None) -> float | None:
    return None if a is None or b is None else jaro_winkler(a, b)


def _damerau_levenshtein(a: str | None, b: str | None) -> int | None:
    return None if a is None or b is None else damerau_levenshtein(a, b)


def register_udfs(session: Any) -> None:
    from pyspark.sql.types import DoubleType, LongType

    session.udf.register(JARO_WINKLER_UDF, _jaro_winkler, DoubleType())
    session.udf.register(DAMERAU_LEVENSHTEIN_UDF, _damerau_levenshtein, LongType())


def to_spark_sql(condition: str) -> str:
    """A DuckDB SQL condition of a comparison level in Spark SQL, with the same meaning."""
    import sqlglot
    from sqlglot import exp

    if condition.strip().upper() == "ELSE":
        return condition
    tree = sqlglot.parse_one(condition, read="duckdb")

    def bind(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.JarowinklerSimilarity):
            return exp.Anonymous(this=JARO_WINKLER_UDF, expressions=[node.this, node.expression])
        if isinstance(node, exp.Anonymous) and node.name.lower() == "damerau_levenshtein":
            return exp.Anonymous(this=DAMERAU_LEVENSHTEIN_UDF, expressions=list(node.expressions))
        if isinstance(node, exp.Anonymous) and node.name.lower() in ("jaro_winkler_similarity", "jaro_similarity",
                                                                      "levenshtein", "jaccard"):
            raise ValueError(f"no Spark binding for {node.name} in {condition!r}")
        return node

    return tree.transform(bind).sql(dialect="spark")


def spark_settings(splink_settings: dict[str, Any]) -> dict[str, Any]:
    """The stored (DuckDB) Splink settings with every comparison level in Spark SQL."""
    out = copy.deepcopy(splink_settings)
    for comp in out["comparisons"]:
        for lv in comp["comparison_levels"]:
            lv["sql_condition"] = to_spark_sql(lv["sql_condition"])
            lv.pop("sql_dialect", None)
    return out
