"""Common Workflow Language (CWL v1.2) workflows on dockyard's planner.

cwltool loads, validates and evaluates the workflow (parameter references, JavaScript,
``valueFrom``, ``when``, scatter, ExpressionTools); every CommandLineTool invocation is
handed to a dockyard run as an instance (:mod:`dockyard.execution.feed`), so it is cached
by content, packed, placed, retried and recorded like a pipeline step. cwltool is an
optional dependency (``pip install 'dockyard[cwl]'``): import this package's modules only
where a CWL document is run.
"""
