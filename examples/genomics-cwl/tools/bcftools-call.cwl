cwlVersion: v1.2
class: CommandLineTool
doc: One sample's variants, normalised (calls.vcf.gz with its index, and calls.tsv).
requirements:
  DockerRequirement: {dockerPull: "dockyard/samtools:1.16"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
baseCommand: [sh]
arguments: [{valueFrom: ., position: 4}]
inputs:
  script: {type: File, inputBinding: {position: 1}}
  reference: {type: File, secondaryFiles: [.fai], inputBinding: {position: 2}}
  bam: {type: File, secondaryFiles: [.bai], inputBinding: {position: 3}}
outputs:
  vcf: {type: File, outputBinding: {glob: calls.vcf.gz}, secondaryFiles: [.csi]}
  table: {type: File, outputBinding: {glob: calls.tsv}}
