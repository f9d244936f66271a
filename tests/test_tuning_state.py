"""Keras Tuner's state keyed to the store and the search, never to the working folder:
a search found in the store but not its state is refused with one line naming where
the state is, instead of drawing trial ids 0, 1, ... again under a finished search."""

from pathlib import Path

import pytest
from conftest import melody, write_pair

from pianotx.build import build_dataset
from pianotx.config import BuildConfig, ChunkConfig, ConfigError
from pianotx.locations import Store
from pianotx.tracking import STATE_TAG, SearchTracker, connect
from pianotx.tuning.state import bind, bound_run, check_state, location, prepare_worker_state, state_root

URI = "http://10.0.0.5:5000"


def test_a_servers_state_does_not_depend_on_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = Store(URI, None)
    roots = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        roots.append(state_root(server))
    assert roots[0] == roots[1] == tmp_path / "cache" / "pianotx" / "keras-tuner" / roots[0].name
    assert roots[0].name.startswith("10.0.0.5_5000-")
    assert state_root(Store("http://other:5000", None)) != roots[0]
    local = Store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", None)
    assert state_root(local) == tmp_path / "mlruns" / "keras-tuner"
    assert state_root(server, tmp_path / "mine") == tmp_path / "mine"


def test_state_and_search_run_must_belong_together(tmp_path):
    project = tmp_path / "kt" / "s"
    check_state(project, "s", URI, None, None, False)  # a new search, an empty folder
    check_state(project, "s", URI, "run1", None, False)  # a search stopped before its first trial
    with pytest.raises(ConfigError) as err:  # found the run, not its state: refuse, naming it
        check_state(project, "s", URI, "run1", "otherhost:/srv/kt/s", True)
    assert str(err.value) == (
        f"search 's' (run run1 in {URI}) keeps its Keras Tuner state in otherhost:/srv/kt/s, not in {project}: "
        "run it there (or pass --state-dir with that folder), or start afresh with --overwrite"
    )
    with pytest.raises(ConfigError, match=f"its Keras Tuner state in {project} is gone; start afresh"):
        check_state(project, "s", URI, "run1", location(project), True)
    bind(project, "run1", URI)
    assert bound_run(project) == "run1"
    check_state(project, "s", URI, "run1", "anywhere", True)  # the state is here: resumed
    with pytest.raises(ConfigError, match=r"holds the Keras Tuner state of a search 's' \(run run1\) that"):
        check_state(project, "s", URI, None, None, False)  # the store lost the search
    with pytest.raises(ConfigError, match="keeps its Keras Tuner state in"):
        check_state(project, "s", URI, "run2", "h:/p", True)  # the state of an earlier search of this name


def test_state_written_before_it_was_recorded_is_adopted(tmp_path):
    project = tmp_path / "s"
    project.mkdir()
    (project / "oracle.json").write_text("{}")
    check_state(project, "s", URI, "run1", None, True)


def test_a_workers_scratch_of_another_search_is_cleared(tmp_path):
    project = tmp_path / "s"
    (project / "trial_0" / "backup").mkdir(parents=True)
    prepare_worker_state(project, "run2", URI)  # no record: not this search's
    assert not (project / "trial_0").exists() and bound_run(project) == "run2"
    (project / "trial_0" / "backup").mkdir(parents=True)
    prepare_worker_state(project, "run2", URI)  # this search's: kept (a backup to resume from)
    assert (project / "trial_0" / "backup").is_dir()


def test_a_workers_trial_folder_linked_elsewhere_loses_the_link_not_its_target(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "backup").mkdir(parents=True)
    (elsewhere / "backup" / "kept").write_text("x")
    project = tmp_path / "kt" / "s"
    (project / "trial_1").mkdir(parents=True)
    (project / "trial_0").symlink_to(elsewhere, target_is_directory=True)
    (project / "trial_2").symlink_to(tmp_path / "kt", target_is_directory=True)  # the state folder itself
    prepare_worker_state(project, "run2", URI)
    assert sorted(p.name for p in project.iterdir()) == ["search.json"]
    assert (elsewhere / "backup" / "kept").read_text() == "x" and (tmp_path / "kt").is_dir()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("state")
    for i in range(4):
        write_pair(root / "pairs", f"p{i}", melody(i, seconds=4.0))
    config = BuildConfig(chunks=ChunkConfig(chunk_frames=64))
    build_dataset(root / "pairs", root / "ds", config, workers=1, progress=False, log=lambda _: None)
    return root / "ds"


def test_a_search_rerun_away_from_its_state_is_refused_and_changes_nothing(tmp_path, dataset):
    from pianotx.tuning.search import run_search

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    space = tmp_path / "s.yaml"
    space.write_text("name: s\ntuner: {type: random, max_trials: 2, seed: 0}\nfixed: {epochs: 1}\n")
    first = tmp_path / "first" / "s"  # where the search began: its run, a finished trial, its state
    tracker = SearchTracker(store, "s")
    parent = tracker.start_search({}, {STATE_TAG: location(first)}, [], settle=0)
    trial = tracker.start_trial("0", {})
    tracker.end_trial(trial)
    bind(first, parent, store.tracking_uri)
    (first / "oracle.json").write_text("{}")

    with pytest.raises(ConfigError, match=f"keeps its Keras Tuner state in .*:{first}, not in"):
        run_search(space, dataset, store, "piano", verbose=0, state_dir=tmp_path / "second")
    client = connect(store)
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    assert sorted(r.info.run_id for r in runs) == sorted([parent, trial])
    assert client.get_run(parent).info.status == "RUNNING"  # not reopened, not ended
    assert not list((tmp_path / "second").rglob("*.json")) and not client.search_registered_models()


def test_a_worker_with_another_dataset_is_refused(tmp_path, dataset, monkeypatch):
    from pianotx.tuning import search
    from pianotx.tuning.distributed import worker_role

    monkeypatch.setattr(search, "wait_for_chief", lambda role: None)  # the chief "answers"
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", (tmp_path / "artifacts").as_uri())
    space = tmp_path / "s.yaml"
    space.write_text("name: s\ntuner: {type: random, max_trials: 2, seed: 0}\nfixed: {epochs: 1}\n")
    SearchTracker(store, "s").start_search({"dataset_fingerprint": "the chief's"}, {}, [], settle=0)
    with pytest.raises(ConfigError, match=f"{dataset}: not the dataset of search 's' \\(its fingerprint differs"):
        search.run_search(space, dataset, store, verbose=0, role=worker_role("0", "127.0.0.1:1"))
