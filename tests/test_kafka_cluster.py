"""Issue 21's replicated Kafka: three embedded KRaft brokers, topics with three copies of which
two must acknowledge, and a producer that waits for them and writes each frame once.

A broker SIGKILLed mid-stream, with nothing lost or duplicated in raw_trades and each frame
once in Kafka, is tested end to end in tests/test_scale_out.py (with the pipeline on a Spark
cluster and the lake on S3).
"""

from __future__ import annotations

import pytest

from cryptoflow.core.config import load_settings
from cryptoflow.core.errors import ConfigError, ServiceError
from cryptoflow.core.services import kafka


# ----- pure: the cluster's layout and broker configuration
def test_three_brokers_listen_on_ports_two_apart_and_all_vote():
    s = load_settings(environ={"CRYPTOFLOW_KAFKA_BROKERS": "3"}, dotenv=None)
    assert s.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    cluster = kafka.nodes(s)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster] == [
        (1, 19092, 19093), (2, 19094, 19095), (3, 19096, 19097)]  # fmt: skip
    assert kafka.quorum_voters(cluster) == ("1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097")
    # node 1 keeps the single broker's files; the others add their id
    assert (cluster[0].data.name, cluster[0].pid.name) == ("data", "broker.pid")
    assert (cluster[2].data.name, cluster[2].pid.name) == ("data-3", "broker-3.pid")
    props = dict(
        line.split("=", 1)
        for line in kafka.server_properties(cluster[1], "V", 3, 4).splitlines()
        if line
    )
    assert props["node.id"] == "2" and props["controller.quorum.voters"] == "V"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"
    assert props["log.dirs"].endswith("/kafka/data-2")
    assert (props["default.replication.factor"], props["min.insync.replicas"]) == ("3", "2")
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["unclean.leader.election.enable"] == "false"
    assert props["num.partitions"] == "4"


def test_replication_is_three_copies_at_most_two_in_sync_from_three():
    assert [kafka.replication(n) for n in (1, 2, 3, 5)] == [(1, 1), (2, 1), (3, 2), (3, 2)]
    one = load_settings(environ={}, dotenv=None)
    assert one.bootstrap_servers == "127.0.0.1:19092"  # a single broker as before
    assert "min.insync.replicas=1" in kafka.server_properties(kafka.nodes(one)[0], "V", 1, 3)


def test_broker_counts_and_ports_that_cannot_work_are_config_errors():
    for env in ({"CRYPTOFLOW_KAFKA_BROKERS": "0"}, {"CRYPTOFLOW_KAFKA_BROKERS": "10"},
                {"CRYPTOFLOW_KAFKA_BROKERS": "3", "CRYPTOFLOW_KAFKA_CONTROLLER_PORT": "19094"},
                {"CRYPTOFLOW_KAFKA_BROKERS": "3", "CRYPTOFLOW_KAFKA_PORT": "65534"}):  # fmt: skip
        with pytest.raises(ConfigError, match="CRYPTOFLOW_KAFKA_"):
            load_settings(environ=env, dotenv=None)


def test_storage_formatted_for_another_broker_count_is_refused(tmp_path):
    s = load_settings(environ={}, dotenv=None, data_dir=tmp_path, kafka_brokers=3)
    kafka.root(s).mkdir(parents=True)
    (kafka.root(s) / "cluster.properties").write_text("cluster.id=abc\nbrokers=1\n")
    with pytest.raises(ServiceError, match="cluster of 1 broker"):
        kafka._cluster_id_of(s)
    assert kafka._cluster_id_of(s.replace(kafka_brokers=1)) == "abc"


def test_the_producer_waits_for_the_in_sync_copies_and_writes_each_frame_once():
    from ingestion.producer import producer_config

    s = load_settings(environ={"CRYPTOFLOW_KAFKA_BROKERS": "3"}, dotenv=None)
    config = producer_config(s)
    assert config["bootstrap.servers"] == s.bootstrap_servers  # every broker, not just one
    assert (config["acks"], config["enable.idempotence"]) == ("all", True)
    assert config["message.timeout.ms"] == 0  # a frame is never given up on
