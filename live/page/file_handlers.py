"""The File tab's Analyse button, which is also the ``/analyse_file`` API endpoint
(``live.page.file_analysis.analyse_video``). Its windows go to the caller's study log
when one is on (the tab's own, or the app's ``--log-session`` log, which API callers
share), with the tab's self-report; the upload is deleted once analysed (or refused).
"""
from __future__ import annotations

from pathlib import Path

from live.contract.cli import one_line
from live.page.file_analysis import WindowsNotLogged, analyse_video
from live.page.guard import check_settings, guard, user_error
from live.page.hosting import discard_upload, release_memory
from live.page.render import file_outputs
from live.sources import SourceError
from live.study_log import StudyLogError, short


def wire_file(f: dict, live: dict, session, holder, export_dir: Path) -> None:
    """``f``: the File tab's components, ``live``: the Live tab's (its window, hop and
    gate settings apply); exports go under ``export_dir``."""
    import gradio as gr

    def analyse_file(path, window_s, hop_s, gate_policy, s, progress=gr.Progress()):
        """Analyse a video file window by window → status, table, timeline, JSONL, CSV."""
        if s.view.participant_view:
            raise user_error("A participant's page does not analyse files.")
        name = Path(path).name if isinstance(path, str) and path else "the upload"
        try:
            _check_upload(path, name)
            check_settings(window_s, hop_s, gate_policy)
            progress(0.0, desc="decoding + analysing")
            records = analyse_video(path, holder, window_s, hop_s, gate_policy, study=s.study.log,
                                    progress=lambda frac: progress(frac, desc="analysing"),
                                    fields=s.study.fields(), name=name)
            return file_outputs(records, name, export_dir)
        except SourceError as e:
            raise user_error(f"Cannot analyse this upload: {one_line(e)}", stay=True) from None  # e names the file
        except (OSError, StudyLogError) as e:  # WindowsNotLogged names the windows not stored
            raise user_error(f"{name}: {one_line(e)}" if isinstance(e, (WindowsNotLogged, StudyLogError))
                             else f"The results of {name} could not be stored: {one_line(e)}", stay=True) from None
        finally:
            discard_upload(path if isinstance(path, str) else None)  # refused ones too
            release_memory()

    f["go"].click(guard(analyse_file), [f["video"], live["win"], live["hop"], live["gate"], session],
                  f["outputs"], api_name="analyse_file")


def _check_upload(path, name: str) -> None:
    """user_error unless ``path`` is an upload still on the server (``name``: the
    upload's own name, which Gradio keeps, never the server's temp path)."""
    if not path:
        raise user_error("Upload a video file first.")
    if not isinstance(path, str):
        raise user_error(f"the video must be an uploaded file, got {short(path)}")
    if not Path(path).is_file():
        raise user_error(f"{name} is no longer on the server (uploads are deleted once "
                         "analysed): upload it again.", stay=True)
