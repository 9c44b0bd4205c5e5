"""Config parsing: durations, sizes, secrets, names, and what is refused."""

import pytest

from agent.config.document import load_config
from agent.config.types import parse_duration, parse_size
from agent.errors import ConfigError


@pytest.mark.parametrize(
    "text,seconds",
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), (12, 12.0), (0.5, 0.5), ("1.5s", 1.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text,size",
    [("16MiB", 16 << 20), ("512KB", 512_000), ("1GiB", 1 << 30), (4096, 4096), ("64kib", 65536), ("10", 10)],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["soon", "-1s", "5 parsecs", True])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_names_default_to_type_and_index_and_must_be_unique(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "stdout"\n[[outputs]]\ntype = "file"\npath = "x"\n',
        )
    )
    assert [o.name for o in cfg.outputs] == ["stdout.0", "file.1"]
    with pytest.raises(ConfigError, match="name 'a' is used twice"):
        load_config(
            write(
                tmp_path,
                '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "stdout"\nname = "a"\n'
                '[[outputs]]\ntype = "stdout"\nname = "a"\n',
            )
        )


def test_secrets_from_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FWD_KEY", "from-env")
    (tmp_path / "pw").write_text("from-file\n")
    cfg = load_config(
        write(
            tmp_path,
            f'[[inputs]]\ntype = "forward"\nshared_key = "env:FWD_KEY"\n'
            f'users = [{{username = "u", password = "file:{tmp_path}/pw"}}]\n'
            '[[outputs]]\ntype = "stdout"\n',
        )
    )
    inp = cfg.inputs[0]
    assert inp.shared_key.get_secret_value() == "from-env"
    assert inp.users[0].password.get_secret_value() == "from-file"
    assert "from-env" not in repr(cfg) and "from-file" not in repr(cfg)


@pytest.mark.parametrize(
    "text,message",
    [
        ('[[inputs]]\ntype = "forward"\nport = 70000\n', "port"),
        ('[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "file"\npath = "{nope}"\n', "placeholders"),
        ('[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "stdout"\nmatch = "a.{b"\n', None),
        ('[[inputs]]\ntype = "forward"\nusers = [{username = "u", password = "p"}]\n', "users need shared_key"),
        (
            '[agent.journal]\nmax_bytes = "1MiB"\nsegment_bytes = "64MiB"\n[[inputs]]\ntype = "forward"\n',
            "max_bytes must be at least segment_bytes",
        ),
        ('[agent]\nunknown = 1\n[[inputs]]\ntype = "forward"\n', "agent.unknown: unknown key"),
        ("", "at least one [[inputs]]"),
        ('[[inputs]]\ntype = "forward"\nport = 1\n[[inputs]]\ntype = "forward"\nport = 1\n', "two inputs listen"),
        ('[[inputs]]\ntype = "tail"\npath = "/l/*.log"\ntag = "a.{game}"\n', "tag_regex has no such named group"),
        ('[[inputs]]\ntype = "tail"\npath = "/l/*.log"\ntag = "a.{game}"\ntag_regex = "/l/(?P<g>x"\n', "tag_regex"),
        ('[[inputs]]\ntype = "tail"\npath = "l/*.log"\ntag = "a"\n', "must be absolute"),
        ('[[inputs]]\ntype = "tail"\npath = "/l/*.log"\n', "inputs.0.tag: Field required"),
        (
            '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "appsflyer"\n'
            '[outputs.apps."com.com2us.x.normal.freefull.apple.global.ios.universal"]\n'
            'app_id = "123456"\ntoken = "t"\n',
            "must be 'id' + digits",
        ),
        (
            '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "appsflyer"\n[outputs.apps."a"]\napp_id = "a"\n'
            'token_env = "HIVE_TEST_UNSET_TOKEN"\n',
            "HIVE_TEST_UNSET_TOKEN is not set",
        ),
        (
            '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "wisetracker"\n[outputs.apps."a"]\ntoken = "t"\n',
            "service_number (_wtno) is required",
        ),
    ],
)
def test_refused(tmp_path, text, message):
    if message is None:  # an unclosed brace closes at the end of the pattern, as in Fluentd
        from agent.routing import compile_pattern

        load_config(write(tmp_path, text))
        assert compile_pattern("a.{b")("a.b")
        return
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert message in str(err.value)


def test_tail_input_takes_one_path_or_a_list_and_fluentd_defaults(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            '[[inputs]]\ntype = "tail"\npath = "/var/log/game/*.json"\ntag = "g.*"\n[[outputs]]\ntype = "stdout"\n',
        )
    )
    tail = cfg.inputs[0]
    assert tail.name == "tail.0" and tail.path == ["/var/log/game/*.json"]
    assert (tail.read_from_head, tail.follow_inodes, tail.rotate_wait, tail.refresh_interval) == (False, False, 5, 60)


@pytest.mark.parametrize(
    "name,ok",
    [
        ("a_b", True),
        ("hive-http", True),
        ("out.1", True),
        ("a/b", False),
        ("../x", False),
        ("..", False),
        (".", False),
        ("a b", False),
        ("", False),
        ("é", False),
        ("x" * 101, False),
    ],
)
def test_component_names_use_a_safe_alphabet(tmp_path, name, ok):
    text = f'[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "stdout"\nname = "{name}"\n'
    if ok:
        assert load_config(write(tmp_path, text)).outputs[0].name == name
    else:
        with pytest.raises(ConfigError, match=r"outputs\.0\.name: .* is not a usable name"):
            load_config(write(tmp_path, text))


def test_the_readme_config_is_a_valid_config(tmp_path):
    """The one config a newcomer reads first must be one the agent takes."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [toml] = re.findall(r"```toml\n(.*?)```", readme, re.S)
    path = tmp_path / "agent.toml"
    path.write_text(toml.replace('"/var/lib/hive-agent"', f'"{tmp_path / "var"}"'))
    cfg = load_config(path)
    assert [o.type for o in cfg.outputs] == ["forward"] and [f.type for f in cfg.filters] == ["hive"]


def test_parsed_values_are_held_as_plain_builtins_that_any_encoder_takes(tmp_path):
    import msgspec

    cfg = load_config(
        write(
            tmp_path,
            '[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = "http"\nurl = "http://h/"\nmatch = "a.**"\n'
            'retry_wait = "250ms"\nbatch_bytes = "1MiB"\n',
        )
    )
    out = cfg.outputs[0]
    held = (out.match, out.name, out.url, out.retry_wait, out.batch_bytes, cfg.agent.journal.max_bytes)
    assert [type(v) for v in held] == [str, str, str, float, int, int]
    assert (out.retry_wait, out.batch_bytes) == (0.25, 1 << 20)
    assert msgspec.json.decode(msgspec.json.encode(held)) == list(held)


def test_every_error_of_a_document_is_said_at_once_by_its_key(tmp_path):
    text = (
        '[agent]\nlog_level = "loud"\n[[inputs]]\ntype = "forward"\nport = "x"\nmax_frame_size = 10\n'
        '[[inputs]]\ntype = "nope"\n[[outputs]]\ntype = "stdout"\nbogus = 1\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    lines = str(err.value).splitlines()
    assert [line.split(": ")[1] for line in lines] == [
        "agent.log_level",
        "inputs.0.port",
        "inputs.1.type",
        "outputs.0.bogus",
    ]


@pytest.mark.parametrize("value", ["[1]", "{a = 1}", "3"])
def test_a_type_that_is_no_string_is_a_config_error_not_a_crash(tmp_path, value):
    text = f'[[inputs]]\ntype = "forward"\n[[outputs]]\ntype = {value}\n'
    with pytest.raises(ConfigError, match=r"outputs\.0\.type: .* is not one of"):
        load_config(write(tmp_path, text))
