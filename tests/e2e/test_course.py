"""Every command and Python block of docs/course.md runs, in order, in one empty folder, as a learner
would run them: each line of a bash block exits 0 (or 1 where it is marked `# exits 1`)."""
import os
import subprocess
import sys
from pathlib import Path

from course_map import COURSE, code_blocks


def test_the_course_map_runs_from_top_to_bottom(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MPLCONFIGDIR": str(tmp_path / ".mpl"), "PYTHONUNBUFFERED": "1"}
    ran = []
    for language, text in code_blocks(COURSE):
        if language == "python":
            commands = [([sys.executable, "-c", text], 0, text.splitlines()[0])]
        else:
            assert language == "bash", f"a {language!r} block: the test runs bash and python only"
            commands = [(line, 1 if line.rstrip().endswith("# exits 1") else 0, line)
                        for line in text.splitlines() if line.strip() and not line.startswith("#")]
        for command, expected, shown in commands:
            result = subprocess.run(command, shell=isinstance(command, str), cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == expected, (f"{shown!r} exited {result.returncode}, not {expected}:\n"
                                                   f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            assert "Traceback" not in result.stderr, result.stderr[-2000:]
            ran.append(shown)
    assert len(ran) >= 25
    assert (tmp_path / "runs" / "full" / "weights" / "best.safetensors").is_file()
