"""Per-batch values (a write time, a watermark) that leave Spark's generated code alone.

Spark writes long and timestamp literals into the Java source it generates for a query
(``... .write(7, 1795703470023000L)``) and compiles each distinct source with Janino. A
value that changes every micro-batch therefore made every batch compile classes of its
own, and the stream of one-off classes pushed reusable ones out of the code cache.

Here such a value travels as text, which generated code receives as a reference, and is
converted per row (a cast of a short string). The text is concatenated with an empty
substring of ``anchor``, a string column that is never NULL: that keeps constant folding
(and its pushing of casts into CASE branches) from turning the conversion back into a
literal.

This works for values known when the DataFrame is built (in ``foreachBatch``). Inside a
streaming plan, ``current_timestamp()`` is the batch timestamp that Structured Streaming
substitutes after optimization, as a literal; ``batch_timestamp`` keeps it out of the
generated code by evaluating it in an expression that Spark never compiles (``reflect``).
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def opaque_long(value: int | Column, anchor: Column) -> Column:
    """``value`` (a Python int or a foldable long expression) as a bigint column whose
    generated code does not contain the number; ``anchor``: a never-NULL string column."""
    text = F.lit(str(value)) if isinstance(value, int) else value.cast("string")
    return F.concat(text, F.substring(anchor, 1, 0)).cast("long")


def opaque_timestamp(ts: Column, anchor: Column) -> Column:
    """``ts`` (a foldable timestamp, e.g. a literal), to the microsecond, as a column whose
    generated code does not contain it (``anchor`` as above)."""
    return F.timestamp_micros(opaque_long(F.unix_micros(ts), anchor))


def batch_timestamp() -> Column:
    """The micro-batch's timestamp (to the ms, as Spark keeps it) inside a streaming plan:
    ``current_timestamp()``, which Structured Streaming fixes per batch from its offset log,
    evaluated by ``reflect``, an interpreted expression whose children stay out of the
    generated source. Written as ``current_timestamp()``, the value sat inline in the code
    of the query's parse and validation stage, so every batch compiled that stage anew.
    An interpreted expression also keeps its own projection out of whole-stage code: select
    it on its own, before the heavy work (``parse_frames``)."""
    return F.expr(
        "timestamp_micros(cast(reflect('java.lang.String', 'valueOf', "
        "unix_micros(current_timestamp())) as bigint))"
    )
