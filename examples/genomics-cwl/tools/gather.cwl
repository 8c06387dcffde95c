cwlVersion: v1.2
class: CommandLineTool
doc: Every sample's calls in one table.
requirements:
  ResourceRequirement: {coresMin: 1, ramMin: 256}
baseCommand: [cat]
inputs:
  tables: {type: 'File[]', inputBinding: {position: 1}}
stdout: calls.tsv
outputs:
  table: {type: stdout}
