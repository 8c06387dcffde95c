"""The Swarm backend: steps as Swarm services placed by dockyard, outputs, inputs and
named volumes kept and moved by dockyard's node agents (:mod:`dockyard.agent`), which this
package deploys."""
