import subprocess
import sys

from flashsh.shell import command_lines, script_lines


def run_flashsh(*args, timeout=60):
    return subprocess.run(
        [sys.executable, "-m", "flashsh", *args], capture_output=True, text=True, timeout=timeout
    )


def test_version_and_help_do_not_import_cmd2():
    code = (
        "import sys, flashsh.cli as c\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n"
        "        c.main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('cmd2' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip().endswith("False")
    assert "flashsh 0.1.0" in out.stdout


def test_command_lines_split_on_semicolons_outside_quotes():
    lines = command_lines('echo "a;b"; info ;; sleep 5')
    assert [text for _, _, text in lines] == ['echo "a;b"', "info", "sleep 5"]


def test_script_lines_skip_comments_and_keep_numbers(tmp_path):
    script = tmp_path / "x.fsh"
    script.write_text("# header\n\necho one\n  # indented comment\necho two\n")
    assert script_lines(str(script)) == [(str(script), 3, "echo one"), (str(script), 5, "echo two")]


def test_unknown_command_fails_with_exit_1():
    result = run_flashsh("-c", "echo hi; frobnicate; echo never")
    assert result.returncode == 1
    assert "hi" in result.stdout
    assert "never" not in result.stdout
    assert "unknown command 'frobnicate'" in result.stderr


def test_missing_port_is_one_clear_line():
    result = run_flashsh("-c", "info", "/dev/ttyNOPE0")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: no such port: /dev/ttyNOPE0 (run `flashsh -c ports` to list serial ports)"
    ]


def test_command_without_connection_says_how_to_connect():
    result = run_flashsh("-c", "info")
    assert result.returncode == 1
    assert "not connected" in result.stderr and "connect PORT" in result.stderr


def test_shell_commands_are_off_in_scripts(tmp_path):
    marker = tmp_path / "ran"
    script = tmp_path / "evil.fsh"
    script.write_text(f"echo start\nshell touch {marker}\necho after\n")
    result = run_flashsh("-s", str(script))
    assert result.returncode == 1
    assert not marker.exists()
    assert f"{script}:2:" in result.stderr and "--allow-shell" in result.stderr
    assert "after" not in result.stdout


def test_shell_commands_run_with_allow_shell(tmp_path):
    marker = tmp_path / "ran"
    result = run_flashsh("--allow-shell", "-c", f"shell touch {marker}")
    assert result.returncode == 0, result.stderr
    assert marker.exists()


def test_redirection_to_a_shell_pipe_is_off_by_default(tmp_path):
    marker = tmp_path / "piped"
    result = run_flashsh("-c", f"echo hi | touch {marker}")
    assert not marker.exists()
    assert result.returncode in (0, 1)


def test_missing_script_file():
    result = run_flashsh("-s", "/nonexistent/recipe.fsh")
    assert result.returncode == 1
    assert "cannot read script /nonexistent/recipe.fsh" in result.stderr


def test_a_port_that_answers_something_else_is_called_wrong_protocol():
    # loop:// echoes what is sent: an answer, but not an STK500 one.
    result = run_flashsh("--baud", "115200", "-c", "info", "loop://")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "answers, but not as any bootloader flashsh knows" in errors[0]
    assert "30 20" in errors[0] and "press reset" in errors[0]


def test_refused_network_port():
    import socket

    with socket.socket() as probe:  # a free loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_flashsh("-c", "info", f"socket://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"nothing is listening at socket://127.0.0.1:{port}" in result.stderr


def test_permission_denied_names_the_dialout_group():
    import errno

    from flashsh.transports.serial import _open_error

    error = _open_error("/dev/ttyACM0", PermissionError(errno.EACCES, "Permission denied"))
    assert str(error).startswith("permission denied on /dev/ttyACM0")
    assert "dialout" in str(error)
    busy = _open_error("/dev/ttyACM0", OSError(errno.EBUSY, "Device or resource busy"))
    assert "in use by another program" in str(busy)
