"""Delta log listing: ``listFrom`` of Delta's local log store against cryptoflow's
(``cryptoflow.core.jvm``) in a ``_delta_log`` of N commits.

Each commit is four files, as a streaming table writes them on a local disk (the commit,
its checksum, and Hadoop's hidden checksum of each). The listing starts 100 versions before
the end (a checkpoint every 100 commits), which is what every snapshot update asks for.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stack import save  # noqa: E402

from cryptoflow.core.config import load_settings  # noqa: E402
from cryptoflow.core.jvm import LOG_STORE  # noqa: E402
from cryptoflow.core.spark import get_spark  # noqa: E402

DELTA_LOG_STORE = "io.delta.storage.LocalLogStore"


def make_log(directory: Path, commits: int) -> None:
    for version in range(commits):
        for suffix in (".json", ".crc"):
            (directory / f"{version:020d}{suffix}").write_bytes(b"{}")
            (directory / f".{version:020d}{suffix}.crc").write_bytes(b"")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--commits", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                    help="log sizes to measure, in commits")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=5, help="listings per store and size (median)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cryptoflow-bench-") as tmp:
        settings = load_settings(environ={}, dotenv=None, data_dir=Path(tmp) / "data")
        spark = get_spark(settings, "bench-log-listing")
        jvm, conf = spark._jvm, spark.sparkContext._jsc.hadoopConfiguration()
        stores = {}
        for name in (DELTA_LOG_STORE, LOG_STORE):
            conf_arg = spark.sparkContext._gateway.new_array(jvm.java.lang.Object, 1)
            conf_arg[0] = conf
            ctor = jvm.java.lang.Class.forName(name).getConstructors()[0]
            stores[name] = ctor.newInstance(conf_arg)
        results = []
        for commits in args.commits:
            log = Path(tmp) / f"log-{commits}"
            log.mkdir()
            print(f"bench: writing a log of {commits} commits ({commits * 4} files)", flush=True)
            make_log(log, commits)
            start = jvm.org.apache.hadoop.fs.Path((log / f"{commits - 100:020d}.json").as_uri())
            row = {"commits": commits, "files": commits * 4}
            for name, store in stores.items():
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    store.listFrom(start, conf)  # both build the whole listing here
                    times.append((time.perf_counter() - t) * 1000)
                row[name.rsplit(".", 1)[1] + "_ms"] = statistics.median(times)
            results.append(row)
            print(f"{commits:>8} commits: Delta's LocalLogStore "
                  f"{row['LocalLogStore_ms']:8.1f} ms, NioLocalLogStore "
                  f"{row['NioLocalLogStore_ms']:7.1f} ms per listing", flush=True)  # fmt: skip
        spark.stop()
    print(f"saved {save('log-listing', {'results': results})}")


if __name__ == "__main__":
    main()
