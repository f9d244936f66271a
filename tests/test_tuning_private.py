"""What pianotx relies on in Keras Tuner's private modules (pianotx.tuning.private):
a Keras Tuner upgrade that moves or changes one of them fails here first."""

import inspect
import json
import threading

import keras_tuner as kt

from pianotx.tuning import private


def test_state_files_are_written_by_one_save_json(tmp_path):
    utils = private.state_utils()
    assert list(inspect.signature(utils.save_json).parameters) == ["path", "obj"]
    utils.save_json(str(tmp_path / "x.json"), {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
    # the oracle and the tuner write through the module attribute, so replacing it reaches them
    from keras_tuner.src.engine import stateful, tuner

    for module in (stateful, tuner):
        assert "utils.save_json(" in inspect.getsource(module), module.__name__


def test_the_distributed_protocol_has_what_the_chief_and_workers_send():
    service, grpc_service = private.protos().get_service(), private.protos().get_service_grpc()
    assert hasattr(grpc_service, "OracleStub") and hasattr(grpc_service, "add_OracleServicer_to_server")
    service.GetSpaceRequest()
    assert "trial" in service.CreateTrialResponse.DESCRIPTOR.fields_by_name


def test_the_servicer_creates_trials_through_its_oracle_and_can_be_told_to_stop():
    servicer = private.oracle_servicer()
    assert "CreateTrial" in vars(servicer)
    oracle = kt.oracles.RandomSearchOracle(objective=kt.Objective("x", "max"), max_trials=1)
    made = servicer(oracle)
    assert made.oracle is oracle and made.stop_triggered is False
    assert list(inspect.signature(private.exit_chief).parameters) == ["args"]


def test_an_oracle_has_one_lock_its_synchronized_methods_take_naming_the_thread():
    from keras_tuner.src.engine import oracle as module

    locks, threads = private.oracle_locks()
    key = object()
    assert type(locks[key]) is type(threading.Lock()) and threads[key] is None  # made on first use
    # `synchronized` takes LOCKS[oracle] unless THREADS[oracle] names the calling thread
    source = inspect.getsource(module.synchronized)
    assert "THREADS[oracle] != thread_name" in source and "LOCKS[oracle].acquire()" in source
