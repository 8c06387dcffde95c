"""cwltool's job executor, run on dockyard: the workflow is evaluated on a driver thread
while the dockyard run (its loop on the calling thread, which gets signals) carries out
the tool invocations handed to it (see :mod:`dockyard.cwl.bridge`)."""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from typing import Any

from cwl_utils.types import CWLObjectType
from cwltool.context import RuntimeContext
from cwltool.errors import WorkflowException
from cwltool.executors import JobExecutor
from cwltool.process import Process
from cwltool.utils import bytes2str_in_dicts

from dockyard.cwl.bridge import Bridge, Stopped
from dockyard.cwl.job import DockyardJob
from dockyard.cwl.staging import confine
from dockyard.errors import RunFailed
from dockyard.execution.feed import Ended

_logger = logging.getLogger("cwltool")
INPUT_TYPES = ("File", "Directory", "WritableFile", "WritableDirectory")  # (not literals)


class DockyardExecutor(JobExecutor):
    def __init__(self, bridge: Bridge, run: Callable[[], object]):
        super().__init__()
        self.bridge = bridge
        self.run = run  # the dockyard run, fed by the bridge: returns or raises at its end
        self.run_id: str | None = None  # once the run succeeded
        self.job_order: CWLObjectType | None = None  # the input object, defaults filled in
        self.committed: Any = None  # the output object before its files are copied out

    def run_jobs(
        self,
        process: Process,
        job_order_object: CWLObjectType,
        logger: logging.Logger,
        runtime_context: RuntimeContext,
    ) -> None:
        failures: list[BaseException] = []
        self.job_order = job_order_object

        def drive() -> None:
            try:
                self._drive(process, job_order_object, runtime_context, logger)
            except Stopped:
                pass  # (the run's own end is what is raised)
            except BaseException as exc:
                failures.append(exc)
            finally:
                self.bridge.close()

        driver = threading.Thread(target=drive, name="dockyard-cwl", daemon=True)
        driver.start()
        try:
            run_id = self.run()
            self.run_id = run_id if isinstance(run_id, str) else None
        except RunFailed:
            pass  # each failed tool was reported to the workflow, which decides its status
        finally:
            self.bridge.stop()
            driver.join()
        if failures:
            raise failures[0]
        if self.final_output:
            self.committed = copy.deepcopy(self.final_output[0])

    def _drive(
        self,
        process: Process,
        job_order_object: CWLObjectType,
        runtime_context: RuntimeContext,
        logger: logging.Logger,
    ) -> None:
        jobs = process.job(job_order_object, self.output_callback, runtime_context)
        for job in jobs:
            if job is None:
                if not self.bridge.waiting():
                    logger.error("Workflow cannot make any more progress.")
                    break
                self._conclude_next(runtime_context)
                continue
            if runtime_context.builder is not None and hasattr(job, "builder"):
                job.builder = runtime_context.builder
            outdir = getattr(job, "outdir", None)
            if outdir:
                self.output_dirs.add(str(outdir))
            job.run(runtime_context)  # a tool is handed over; an expression runs here
        while self.bridge.waiting():
            self._conclude_next(runtime_context)

    def _conclude_next(self, runtime_context: RuntimeContext) -> None:
        job, ended = self.bridge.next_ended()
        outputs, status = self._outputs(job, ended)
        with runtime_context.workflow_eval_lock:  # type: ignore[union-attr]
            assert job.output_callback is not None
            job.output_callback(outputs, status)

    def _outputs(self, job: DockyardJob, ended: Ended) -> tuple[dict[str, Any], str]:
        if ended.output is None:
            code = ended.exit_code
            if code is not None and code in job.temporaryFailCodes:
                status = "temporaryFail"
            else:
                status = "permanentFail"
            _logger.error("[job %s] %s", job.name, ended.message)
            return {}, status
        try:
            folder = self.bridge.output_folder(ended)
            rcode = ended.exit_code if ended.exit_code is not None else 0
            outputs = job.collect_outputs(str(folder), rcode)
            converted: Any = bytes2str_in_dicts(outputs)
            given = {*job.pathmapper.files()}  # (the inputs: where they are, and were)
            given |= {e.resolved for _, e in job.pathmapper.items() if e.type in INPUT_TYPES}
            confine(converted, folder, given=given)
            return converted, "success"
        except (WorkflowException, OSError) as exc:
            _logger.error("[job %s] its outputs: %s", job.name, exc)
            return {}, "permanentFail"
