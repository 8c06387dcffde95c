"""cwltool's CommandLineTool, with dockyard's job and staging (the hooks Arvados and Toil
use: ``LoadingContext.construct_tool_object``)."""

from __future__ import annotations

from collections.abc import Callable, MutableSequence
from typing import Any

from cwl_utils.types import CWLDirectoryType, CWLFileType
from cwltool.command_line_tool import CommandLineTool
from cwltool.context import LoadingContext, RuntimeContext
from cwltool.job import JobBase
from cwltool.pathmapper import PathMapper
from cwltool.process import Process
from cwltool.workflow import default_make_tool
from ruamel.yaml.comments import CommentedMap

from dockyard.cwl.bridge import Bridge
from dockyard.cwl.images import DEFAULT_IMAGE
from dockyard.cwl.job import job_runner
from dockyard.cwl.staging import ContentPathMapper


class DockyardTool(CommandLineTool):
    def __init__(
        self, toolpath_object: CommentedMap, loadingContext: LoadingContext, bridge: Bridge
    ) -> None:
        super().__init__(toolpath_object, loadingContext)
        self.bridge = bridge
        requirement, _ = self.get_requirement("DockerRequirement")
        if requirement is None:
            # A hint, of the lowest rank: what the tool or its workflow says comes first.
            self.hints.insert(0, {"class": "DockerRequirement", "dockerPull": DEFAULT_IMAGE})

    def make_job_runner(self, runtimeContext: RuntimeContext) -> type[JobBase]:
        return job_runner(self.bridge, str(self.tool.get("id", "")))  # type: ignore[return-value]

    def make_path_mapper(
        self,
        reffiles: MutableSequence[CWLFileType | CWLDirectoryType],
        stagedir: str,
        runtimeContext: RuntimeContext,
        separateDirs: bool,
    ) -> PathMapper:
        return ContentPathMapper(reffiles, runtimeContext.basedir, stagedir, separateDirs)


def tool_maker(bridge: Bridge) -> Callable[[CommentedMap, LoadingContext], Process]:
    def make(toolpath_object: CommentedMap, loadingContext: LoadingContext) -> Process:
        if isinstance(toolpath_object, dict) and toolpath_object.get("class") == "CommandLineTool":
            return DockyardTool(toolpath_object, loadingContext, bridge)
        made: Any = default_make_tool(toolpath_object, loadingContext)
        return made  # type: ignore[no-any-return]

    return make
