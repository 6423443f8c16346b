// step-ca for the tests, built from Debian's packaged sources (golang-github-smallstep-
// certificates-dev) with GO111MODULE=off: the library's own start command, run as the whole
// program. test/stepca-real/build.ts compiles and caches it; it is never shipped.
package main

import (
	"fmt"
	"os"

	"github.com/smallstep/certificates/commands"
	"github.com/urfave/cli"
)

func main() {
	app := cli.NewApp()
	app.Name = "step-ca"
	app.Usage = "an online certificate authority (tests only)"
	app.HideVersion = true
	app.Flags = commands.AppCommand.Flags
	app.Action = commands.AppCommand.Action
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
