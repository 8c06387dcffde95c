cwlVersion: v1.2
class: CommandLineTool
doc: One sample's alignments sorted by position, and indexed.
requirements:
  DockerRequirement: {dockerPull: "dockyard/samtools:1.16"}
  ResourceRequirement: {coresMin: 1, ramMin: 512}
baseCommand: [sh, -c, 'samtools sort -o "$0.bam" "$1" && samtools index "$0.bam"']
inputs:
  sample: {type: string, inputBinding: {position: 1}}
  sam: {type: File, inputBinding: {position: 2}}
outputs:
  bam:
    type: File
    outputBinding: {glob: $(inputs.sample).bam}
    secondaryFiles: [.bai]
