"""What the runs screen does to the selected run: cancel, resume, delete, rename, tag, note,
folder.

Whatever cannot be undone asks first; every change goes through the workbench, off the
UI thread, and a refusal comes back as one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen

from caat_storage import ACTIVE_STATUSES, RunStatus

from .calls import call_service, cancel_run
from .modals import ConfirmScreen, NoteScreen, TextPrompt

if TYPE_CHECKING:
    from caat_app.runs.service import Workbench
    from caat_storage import Run


RESUMABLE = (RunStatus.FAILED.value, RunStatus.CANCELLED.value)
"""What `R` resumes (the workbench checks again, with the checkpoint)."""


class RunActions(Screen[None]):
    """The runs screen's actions on one run; `RunsScreen` says which run is selected."""

    bench: Workbench | None

    def selected_run(self) -> Run | None:
        raise NotImplementedError

    def ready(self) -> Workbench | None:
        """The workbench, or None (said) while the store is still opening."""
        if self.bench is None:
            self.notify("opening the store…", markup=False)
        return self.bench

    def chosen(self) -> tuple[Workbench, Run] | None:
        """The workbench and the selected run, when there are both."""
        run = self.selected_run()
        bench = self.ready() if run is not None else None
        return None if bench is None or run is None else (bench, run)

    def action_cancel_run(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if run.status not in ACTIVE_STATUSES:
            self.notify(f"run {run.id} is {run.status}: nothing to cancel", markup=False)
            return
        bench = self.ready()
        if bench is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                cancel_run(self, bench, run)

        self.app.push_screen(
            ConfirmScreen(f"Cancel run {run.id} ({run.name})? It checkpoints and stops."), done
        )

    def action_resume(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if run.status not in RESUMABLE:
            self.notify(
                f"run {run.id} is {run.status}: only a failed or cancelled run resumes",
                markup=False,
            )
            return
        if chosen := self.chosen():
            bench, run = chosen
            call_service(
                self,
                lambda: bench.resume(run),
                lambda step: self.notify(f"run {run.id} resumes at step {step}", markup=False),
            )

    def action_delete(self) -> None:
        run = self.selected_run()
        if run is None:
            return
        if run.status in ACTIVE_STATUSES:
            self.notify("cancel the run before deleting it", severity="warning")
            return
        bench = self.ready()
        if bench is None:
            return

        def done(yes: bool | None) -> None:
            if yes:
                call_service(
                    self,
                    lambda: bench.delete_run(run),
                    lambda _: self.notify(f"run {run.id} deleted", markup=False),
                )

        question = f"Delete run {run.id} ({run.name}), its metrics and its folder {run.run_dir}?"
        self.app.push_screen(ConfirmScreen(question, confirm="Delete"), done)

    def action_rename(self) -> None:
        if chosen := self.chosen():
            bench, run = chosen

            def done(name: str | None) -> None:
                if name:
                    call_service(self, lambda: bench.rename_run(run.id, name))

            self.app.push_screen(TextPrompt(f"New name for run {run.id}", run.name), done)

    def action_tags(self) -> None:
        if chosen := self.chosen():
            bench, run = chosen

            def done(text: str | None) -> None:
                if text is not None:
                    tags = [t.strip() for t in text.split(",") if t.strip()]
                    call_service(self, lambda: bench.set_tags(run.id, tags))

            prompt = TextPrompt(f"Tags for run {run.id}", run.tags, placeholder="comma, separated")
            self.app.push_screen(prompt, done)

    def action_note(self) -> None:
        if chosen := self.chosen():
            bench, run = chosen

            def done(text: str | None) -> None:
                if text is not None:
                    call_service(self, lambda: bench.set_notes(run.id, text))

            note = NoteScreen(f"Note on run {run.id} ({run.name})", run.notes)
            self.app.push_screen(note, done)

    def action_folder(self) -> None:
        run = self.selected_run()
        if run is not None:
            self.app.copy_to_clipboard(run.run_dir)
            self.notify(f"{run.run_dir} (copied to the clipboard)", markup=False, timeout=8)
