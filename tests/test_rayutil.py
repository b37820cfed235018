"""Ray's console output: Ray Data's INFO records leave the console, not its log file."""

from __future__ import annotations

import logging


def test_quiet_ray_data_keeps_warnings_on_the_console_and_info_in_the_file():
    import ray.data

    from drawmatch.runtime.ray_setup import _drop_auth_enabled_notice, quiet_ray_data

    ctx = ray.data.DataContext.get_current()
    logger = logging.getLogger("ray.data")
    saved = (
        ctx.enable_progress_bars,
        ctx.print_on_execution_start,
        [(h, h.level) for h in logger.handlers],
    )
    try:
        quiet_ray_data()
        assert ctx.print_on_execution_start is False
        consoles = [h for h in logger.handlers if isinstance(h, logging.StreamHandler)]
        others = [h for h in logger.handlers if not isinstance(h, logging.StreamHandler)]
        assert consoles and all(h.level == logging.WARNING for h in consoles)
        assert all(h.level < logging.WARNING for h in others)  # the session log file
        assert logger.isEnabledFor(logging.INFO)
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, levels = saved
        for handler, level in levels:
            handler.setLevel(level)

    def record(msg: str, level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("ray", level, __file__, 1, msg, None, None)

    assert not _drop_auth_enabled_notice(
        record("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=...")
    )
    assert _drop_auth_enabled_notice(record("Token authentication is disabled for this Ray"))
