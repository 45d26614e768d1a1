"""Every command and Python block of docs/course.md runs, in order, in one empty folder, as a learner
would run them: each line of a bash block exits 0 (or 1 where it is marked `# exits 1`)."""
import os
import shlex
import subprocess
import sys
import traceback
from pathlib import Path

from course_map import COURSE, code_blocks


def test_the_course_map_runs_from_top_to_bottom(tmp_path, monkeypatch, capsys):
    from tudui import cli
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MPLCONFIGDIR": str(tmp_path / ".mpl"), "PYTHONUNBUFFERED": "1"}
    monkeypatch.chdir(tmp_path)
    ran = []
    for language, text in code_blocks(COURSE):
        if language == "python":
            commands = [(text, 0, text.splitlines()[0])]
        else:
            assert language == "bash", f"a {language!r} block: the test runs bash and python only"
            commands = [(line, 1 if line.rstrip().endswith("# exits 1") else 0, line)
                        for line in text.splitlines() if line.strip() and not line.startswith("#")]
        for command, expected, shown in commands:
            if language == "python":
                # In this process, in a namespace of its own (a script's): torch is imported once
                # for the whole page, not once per block
                try:
                    exec(compile(command, f"<course block: {shown}>", "exec"), {"__name__": "__main__"})
                    status, err = 0, ""
                except Exception:  # noqa: BLE001 - the block's failure, reported below
                    status, err = 1, traceback.format_exc()
                out = capsys.readouterr().out
            elif command.startswith("tudui "):
                # `tudui ...` in this process: what the command does, without starting Python and
                # importing torch again for each line (the Python blocks run as their own processes)
                try:
                    status = cli.main(shlex.split(command, comments=True)[1:])
                except SystemExit as stop:   # argparse's --help
                    status = stop.code or 0
                out, err = capsys.readouterr()
            else:
                result = subprocess.run(command, shell=isinstance(command, str), cwd=tmp_path, env=env,
                                        capture_output=True, text=True, timeout=600)
                status, out, err = result.returncode, result.stdout, result.stderr
            assert status == expected, f"{shown!r} exited {status}, not {expected}:\n{out[-2000:]}\n{err[-2000:]}"
            assert "Traceback" not in err and "unexpected" not in err, err[-2000:]
            ran.append(shown)
    assert len(ran) >= 25
    assert (tmp_path / "runs" / "full" / "weights" / "best.safetensors").is_file()
