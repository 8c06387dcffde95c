from dockyard.agent.server import main

main()
