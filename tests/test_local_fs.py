"""cryptoflow.core.jvm: Spark's ``file:`` paths use the java.nio file system, which behaves like
Hadoop's for permissions and links and starts no process; Delta's ``file:`` tables use the
log store whose listing equals Delta's own."""

from __future__ import annotations

import os
import stat
import zipfile

import pytest

from cryptoflow.core.jvm import FILE_CONTEXT, FILE_SYSTEM, LOG_STORE, local_fs_jar


def _hadoop(spark):
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    return jvm, conf, jvm.org.apache.hadoop.fs


def test_jar_is_built_once_and_holds_the_classes(settings):
    jar = local_fs_jar(settings.jar_cache)
    assert jar is not None and jar.exists()
    mtime = jar.stat().st_mtime_ns
    assert local_fs_jar(settings.jar_cache) == jar and jar.stat().st_mtime_ns == mtime
    names = zipfile.ZipFile(jar).namelist()
    for cls in (FILE_SYSTEM, FILE_CONTEXT, "io.cryptoflow.hadoop.NioRawLocalFileSystem", LOG_STORE):
        assert cls.replace(".", "/") + ".class" in names


def test_spark_uses_it_for_both_file_apis(spark, tmp_path):
    jvm, conf, fs = _hadoop(spark)
    uri = jvm.java.net.URI.create(tmp_path.as_uri())
    assert fs.FileSystem.get(uri, conf).getClass().getName() == FILE_SYSTEM
    context = fs.FileContext.getFileContext(uri, conf)
    assert context.getDefaultFileSystem().getClass().getName() == FILE_CONTEXT


def test_created_files_get_the_requested_mode(spark, tmp_path):
    jvm, conf, fs = _hadoop(spark)
    local = fs.FileSystem.getLocal(conf)
    path = fs.Path((tmp_path / "a.bin").as_uri())
    local.create(path, fs.permission.FsPermission(jvm.java.lang.Short(0o640)), True, 4096,
                 jvm.java.lang.Short(1), 1 << 20, None).close()  # fmt: skip
    mode = stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o640 & ~umask
    local.setPermission(path, fs.permission.FsPermission(jvm.java.lang.Short(0o604)))
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == 0o604
    assert local.getFileStatus(path).getPermission().toShort() == 0o604


def _link_status(jvm, fs, file_system: str, file_context: str, path) -> str:
    """getFileLinkStatus of ``path`` through FileContext and FileSystem, as comparable text."""
    conf = jvm.org.apache.hadoop.conf.Configuration()
    conf.set("fs.file.impl", file_system)
    conf.set("fs.AbstractFileSystem.file.impl", file_context)
    conf.set("fs.file.impl.disable.cache", "true")
    uri = jvm.java.net.URI.create(path.parent.as_uri())
    out = []
    for api in (fs.FileContext.getFileContext(uri, conf), fs.FileSystem.get(uri, conf)):
        try:
            st = api.getFileLinkStatus(fs.Path(path.as_uri()))
        except Exception as e:  # py4j wraps Java's exception: keep its class name
            out.append(str(e).split(":")[1].strip() if "FileNotFound" in str(e) else str(e))
        else:
            out.append(f"symlink={st.isSymlink()} file={st.isFile()} len={st.getLen()}")
    return " | ".join(out)


def test_link_status_equals_hadoops_own(spark, tmp_path):
    jvm, _, fs = _hadoop(spark)
    (tmp_path / "target.txt").write_text("x")
    os.symlink(tmp_path / "target.txt", tmp_path / "link.txt")
    (tmp_path / "dir").mkdir()
    for name in ("target.txt", "link.txt", "dir", "missing"):
        ours = _link_status(jvm, fs, FILE_SYSTEM, FILE_CONTEXT, tmp_path / name)
        hadoop = _link_status(
            jvm, fs, "org.apache.hadoop.fs.LocalFileSystem", "org.apache.hadoop.fs.local.LocalFs",
            tmp_path / name,
        )  # fmt: skip
        assert ours == hadoop, name
        if name == "missing":
            assert "FileNotFoundException" in ours


def _log_listing(spark, store_class: str, start) -> list[tuple]:
    """``listFrom(start)`` of a Delta log store, as (name, length, mtime, is dir) tuples."""
    jvm, conf, fs = _hadoop(spark)
    args = spark.sparkContext._gateway.new_array(jvm.java.lang.Object, 1)
    args[0] = conf
    store = jvm.java.lang.Class.forName(store_class).getConstructors()[0].newInstance(args)
    listed = store.listFrom(fs.Path(start.as_uri()), conf)
    out = []
    while listed.hasNext():
        st = listed.next()
        out.append((st.getPath().toString(), st.getLen(), st.getModificationTime(),
                    st.isDirectory()))  # fmt: skip
    return out


def test_log_listing_equals_deltas_own(spark, tmp_path):
    log = tmp_path / "_delta_log"
    log.mkdir()
    for version in range(12):
        for suffix in (".json", ".crc"):
            (log / f"{version:020d}{suffix}").write_text("x" * version)
            (log / f".{version:020d}{suffix}.crc").write_bytes(b"")  # Hadoop's checksums
    (log / f"{10:020d}.checkpoint.parquet").write_bytes(b"pq")
    (log / f"{3:020d}.{5:020d}.compacted.json").write_text("{}")
    (log / "_last_checkpoint").write_text("{}")
    (log / "_commits").mkdir()
    for start in (f"{0:020d}.json", f"{4:020d}.checkpoint.parquet", f"{10:020d}.json", "_z"):
        ours = _log_listing(spark, LOG_STORE, log / start)
        assert ours == _log_listing(spark, "io.delta.storage.LocalLogStore", log / start), start
    everything = [name.rsplit("/", 1)[1] for name, *_ in _log_listing(spark, LOG_STORE, log / "0")]
    assert everything == sorted(p.name for p in log.iterdir() if not p.name.startswith("."))
    with pytest.raises(Exception, match="FileNotFoundException"):
        _log_listing(spark, LOG_STORE, tmp_path / "missing" / "0")


def test_delta_uses_the_log_store_for_local_tables(spark, tmp_path):
    path = tmp_path / "table"
    spark.range(3).write.format("delta").save(str(path))
    jvm = spark.sparkContext._jvm
    delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, str(path))
    delegate = delta_log.store().getDelegate(delta_log.logPath())
    assert delegate.logStoreImpl().getClass().getName() == LOG_STORE
    spark.range(3, 5).write.format("delta").mode("append").save(str(path))
    assert spark.read.format("delta").load(str(path)).count() == 5


def test_without_javac_or_with_broken_sources_spark_keeps_hadoops_own(
    settings, tmp_path, monkeypatch, caplog
):
    import cryptoflow.core.jvm as jvm_module

    delta_storage = jvm_module._delta_storage_jar(settings.jar_cache)
    monkeypatch.setattr(jvm_module, "_delta_storage_jar", lambda _cache: delta_storage)
    javac = jvm_module._javac
    monkeypatch.setattr(jvm_module, "_javac", lambda: None)
    assert local_fs_jar(tmp_path / "a") is None
    monkeypatch.setattr(jvm_module, "_javac", javac)
    broken = tmp_path / "Broken.java"
    broken.write_text("package io.cryptoflow.hadoop; public class Broken { nonsense }")
    monkeypatch.setattr(jvm_module, "SOURCES", [broken])
    with caplog.at_level("WARNING", logger="cryptoflow.core.jvm"):
        assert local_fs_jar(tmp_path / "b") is None
    assert "javac could not build" in caplog.text
    assert not list((tmp_path / "b").rglob("*.jar"))
