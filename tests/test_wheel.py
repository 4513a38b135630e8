"""The wheel carries the migrations: ``worksession migrate`` works from an installed package.

The migrations live at the top of the repository (``migrations/``) and the build forces them
into the wheel as ``worksession/migrations``. This builds the wheel, unpacks it, and
migrates a fresh SQLite database with the unpacked package alone on the path (its
dependencies come from this environment), so the packaged location is the one used.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from worksession import migrate

REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_migrations_and_migrates_with_them(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--wheel-dir",
            str(tmp_path / "dist"),
            str(REPOSITORY),
        ],
        check=True,
        capture_output=True,
    )
    [wheel] = (tmp_path / "dist").glob("worksession-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    versions = sorted(n for n in names if n.startswith("worksession/migrations/versions/"))
    assert "worksession/migrations/env.py" in names
    # The reference client and the playground are served from the package (ops.playground).
    for static in ("worksession-client.js", "playground.html", "playground.js", "playground.css"):
        assert f"worksession/ops/static/{static}" in names, static
    assert len(versions) == len(list((REPOSITORY / "migrations" / "versions").glob("*.py")))

    database = tmp_path / "fresh.db"
    script = (
        "import worksession.migrate as m, sys; "
        "assert m.MIGRATIONS_DIR.is_relative_to(sys.argv[1]), m.MIGRATIONS_DIR; "
        f"m.upgrade('sqlite+aiosqlite:///{database}'); "
        f"print(m.current_revision('sqlite+aiosqlite:///{database}'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "site")],
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # The packaged migrations reach the head of the repository's own.
    assert done.stdout.strip() == migrate.current_head()
