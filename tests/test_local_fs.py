"""cryptoflow.jvm: Spark's ``file:`` paths use the java.nio file system, which behaves like
Hadoop's for permissions and links and starts no process."""

from __future__ import annotations

import os
import stat
import zipfile

from cryptoflow.jvm import FILE_CONTEXT, FILE_SYSTEM, local_fs_jar


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
    for cls in (FILE_SYSTEM, FILE_CONTEXT, "io.cryptoflow.hadoop.NioRawLocalFileSystem"):
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


def test_without_javac_or_with_broken_sources_spark_keeps_hadoops_own(
    tmp_path, monkeypatch, caplog
):
    import cryptoflow.jvm as jvm_module

    monkeypatch.setattr(jvm_module, "_javac", lambda: None)
    assert local_fs_jar(tmp_path / "a") is None
    monkeypatch.undo()
    broken = tmp_path / "Broken.java"
    broken.write_text("package io.cryptoflow.hadoop; public class Broken { nonsense }")
    monkeypatch.setattr(jvm_module, "SOURCES", [broken])
    with caplog.at_level("WARNING", logger="cryptoflow.jvm"):
        assert local_fs_jar(tmp_path / "b") is None
    assert "javac could not build" in caplog.text
    assert not list((tmp_path / "b").rglob("*.jar"))
