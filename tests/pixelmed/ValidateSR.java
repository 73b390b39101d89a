// pixelmed's DicomSRValidator over many files in one JVM: it compiles its templates once (half a minute),
// where its own main() takes one file a run. Prints "=== <file>" and then the validator's report per file.
import com.pixelmed.validate.DicomSRValidator;

public class ValidateSR {
    public static void main(String[] files) throws Exception {
        DicomSRValidator validator = new DicomSRValidator();
        for (String file : files) {
            System.out.println("=== " + file);
            System.out.println(validator.validate(file));
        }
    }
}
