from frakti_install.cli import main

main()
