import ConfigFile
@testable import ComputeAgentCore
import ImageCopy
import Testing

@Suite("compute-agent --copy-verify")
struct CopyVerifyOptionTests {
    @Test("the default is commit; the option and the config key choose read-back or full")
    func modes() throws {
        #expect(try ComputeAgentCommand.parse([]).resolved(nil).copyVerification == .commit)
        #expect(try ComputeAgentCommand.parse(["--copy-verify", "read-back"]).resolved(nil).copyVerification == .readBack)
        let file = try ConfigFile.parse("[compute-agent]\ncopy-verify = full\n", path: "compute-agent.conf")
        #expect(try ComputeAgentCommand.parse([]).resolved(file).copyVerification == .fullChecksum)
        // the command line wins over the file
        #expect(try ComputeAgentCommand.parse(["--copy-verify", "commit"]).resolved(file).copyVerification == .commit)
    }

    @Test("any other value is refused with the accepted ones")
    func refused() throws {
        do {
            _ = try ComputeAgentCommand.parse(["--copy-verify", "none"]).resolved(nil)
            Issue.record("accepted copy-verify none")
        } catch {
            #expect("\(error)".contains("commit, read-back or full"))
        }
    }
}
