from evolutivo_cli.app import main

main()
